"""Every training recipe loads into a valid TrainConfig and starts with the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlalign.config import load_config
from vlalign.train.config import TrainConfig

RECIPES = sorted((Path(__file__).parents[2] / "recipes" / "train").glob("*.yaml"))


def test_there_are_recipes_for_every_method():
    methods = {load_config(TrainConfig, path, []).method for path in RECIPES}
    assert methods == {"dpo", "povid", "tpo"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid_and_says_how_to_run_it(path):
    config = load_config(TrainConfig, path, [])
    config.validate()
    head = path.read_text().splitlines()[:3]
    assert any(f"--config recipes/train/{path.name}" in line for line in head), head
