"""Every recipe loads into its config and states the defaults the code has."""

from __future__ import annotations

from pathlib import Path

from vlalign.config import load_config
from vlalign.world.pretrain import PretrainConfig
from vlalign.world.scenes import WorldConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_world_recipes_equal_the_defaults():
    assert load_config(WorldConfig, RECIPES / "world/default.yaml") == WorldConfig()
    assert load_config(PretrainConfig, RECIPES / "world/pretrain.yaml") == PretrainConfig()


def test_every_recipe_starts_with_its_command():
    for path in RECIPES.rglob("*.yaml"):
        head = path.read_text().splitlines()[:3]
        assert any(line.lstrip("# ").startswith("vlalign ") for line in head), path


def test_train_recipes_load_and_validate():
    from vlalign.train.config import TrainConfig

    paths = sorted((RECIPES / "train").glob("*.yaml"))
    assert paths
    for path in paths:
        config = load_config(TrainConfig, path)
        config.validate()
        if "7b" in path.name:  # GPU recipes: bf16; LoRA, except TPO's, whose released code fully fine-tunes
            assert config.mixed_precision == "bf16" and config.gradient_checkpointing, path
            assert config.lora.enabled != (config.method == "tpo"), path


def test_every_training_method_has_a_recipe():
    from vlalign.train.config import METHODS, TrainConfig

    methods = {load_config(TrainConfig, path).method for path in (RECIPES / "train").glob("*.yaml")}
    assert methods == set(METHODS)
