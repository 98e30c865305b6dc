"""The demo's settings: presets, overrides on top of them, and the recipes it trains with."""

from __future__ import annotations

import json

import pytest

from vlalign.demo import DEMO_METHODS, PRESETS, DemoConfig, MethodRun, recipe_path
from vlalign.errors import UserError

QUICK = PRESETS["quick"]


def test_quick_preset_then_the_users_overrides_last_wins():
    config = DemoConfig.from_preset("quick", world=["num_train=100"], train={"dpo": ["lr=1e-5"], "fisao": ["fisao.rounds=2"]},
                               seeds=[0, 1])
    assert config.world == [*QUICK["world"], "num_train=100"]  # later keys override earlier ones
    assert config.train["dpo"] == [*QUICK["train"]["dpo"], "lr=1e-5"]
    assert config.train["fisao"][-1] == "fisao.rounds=2" and config.train["tpo"] == QUICK["train"]["tpo"]
    assert config.eval_images == QUICK["eval_images"] and config.seeds == [0, 1] and config.preset == "quick"


def test_full_preset_is_the_recipes_unchanged():
    config = DemoConfig.from_preset("full")
    assert config.world == [] and config.pretrain == [] and config.train == {} and config.eval_images == 500
    assert config.methods == ["dpo", "povid", "tpo", "fisao"] and config.seeds == [0]


def test_the_default_is_the_standard_preset_on_the_default_world():
    config = DemoConfig.from_preset()
    assert config.preset == "standard" and config.world == [] and config.eval_images == 500
    assert config.pretrain == PRESETS["standard"]["pretrain"] and set(config.train) == {"dpo", "povid", "tpo", "fisao"}


def test_parallel_runs_start_longest_first(tmp_path):
    from vlalign.demo import _train_config, longest_first

    config = DemoConfig.from_preset("full")
    runs = [MethodRun(m, 0, _train_config(m, config), tmp_path, tmp_path, tmp_path, tmp_path, 10)
            for m in ("fisao", "tpo", "dpo", "povid")]
    # The world recipes: TPO 1200 steps at twice DPO's step cost, POVID 1800, DPO 1200, then
    # FiSAO's 40 rounds.
    assert [r.method for r in longest_first(runs)] == ["tpo", "povid", "dpo", "fisao"]


def test_quick_preset_does_not_leak_into_the_next():
    first = DemoConfig.from_preset("quick", world=["num_train=100"])
    assert DemoConfig.from_preset("quick").world == QUICK["world"] and first.world[-1] == "num_train=100"


@pytest.mark.parametrize("method", DEMO_METHODS)
def test_every_method_has_a_world_recipe_of_that_method(method):
    from vlalign.config import load_config
    from vlalign.train.config import TrainConfig

    assert load_config(TrainConfig, recipe_path(method)).method == method


@pytest.mark.parametrize("fields, message", [
    (dict(methods=["dpo", "ppo"]), "'ppo' is not one of"),
    (dict(methods=[]), "none given"),
    (dict(seeds=[]), "seeds"),
    (dict(seeds=[1, 1]), "distinct"),
    (dict(eval_images=0), "eval-images"),
])
def test_bad_settings_are_user_errors(fields, message):
    with pytest.raises(UserError, match=message):
        DemoConfig.from_preset("full", **fields).validate()


def test_an_unknown_preset_is_a_user_error():
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        DemoConfig.from_preset("huge")


def test_a_run_directory_is_continued_only_with_its_settings(tmp_path):
    from vlalign.demo import check_reusable

    settings = {"preset": "standard", "world": {"seed": 0, "small_size": (0.2, 0.3)}, "pretrain": {"clip_steps": 5},
                "eval_images": 500, "train": {"dpo": {"max_steps": 4}}, "seeds": [0]}
    path = tmp_path / "demo.json"
    assert check_reusable(path, settings) == {}  # nothing there yet
    path.write_text(json.dumps({"settings": settings}))
    # More seeds and another method only add runs; the earlier method configs come back.
    more = {**settings, "seeds": [0, 1, 2], "train": {"dpo": {"max_steps": 4}, "tpo": {"max_steps": 9}}}
    assert check_reusable(path, more) == {"dpo": {"max_steps": 4}}
    with pytest.raises(UserError, match=r"other settings \(pretrain, train.dpo: preset 'standard' then, 'full' now\)"):
        check_reusable(path, {**settings, "preset": "full", "pretrain": {"clip_steps": 6},
                              "train": {"dpo": {"max_steps": 8}}})
    with pytest.raises(UserError, match=r"\(eval_images:"):
        check_reusable(path, {**settings, "eval_images": 200})
    with pytest.raises(UserError, match=r"\(data:"):  # other preference data
        check_reusable(path, {**settings, "data": {"questions": 1}})
