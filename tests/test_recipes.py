"""The shipped recipes: each loads into its config, is run by the command in its header, is found
by name, and ships in the wheel."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vlalign.config import load_config
from vlalign.demo import DEMO_METHODS
from vlalign.errors import UserError
from vlalign.recipes import ROOT, launch_config, launch_configs, list_recipes, resolve_recipe
from vlalign.train.config import METHODS, TrainConfig
from vlalign.world.pretrain import PretrainConfig
from vlalign.world.scenes import WorldConfig

REPO = Path(__file__).resolve().parents[1]
TRAIN = list_recipes("train")
WORLD = list_recipes("world")
EVAL = list_recipes("eval")
# A world recipe's config class and the `vlalign world` subcommand that reads it.
WORLD_CONFIGS = {"default": (WorldConfig, "cmd_world_make"), "pretrain": (PretrainConfig, "cmd_world_pretrain")}


def test_every_kind_with_recipes_lists_them_and_all_is_every_kind():
    assert TRAIN and WORLD and EVAL
    assert list_recipes() == TRAIN + WORLD + EVAL  # generate and inspect ship none
    assert {r.kind for r in TRAIN} == {"train"} and {r.kind for r in WORLD} == {"world"}
    assert {r.kind for r in EVAL} == {"eval"}
    assert sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.yaml") if p.parent.name != "launch") == sorted(
        f"{r.kind}/{r.name}.yaml" for r in list_recipes())


@pytest.mark.parametrize("recipe", TRAIN, ids=lambda r: r.name)
def test_train_recipe_loads_and_validates(recipe):
    config = load_config(TrainConfig, recipe.path)
    config.validate()
    if "7b" in recipe.name:  # GPU recipes: bf16; LoRA, except TPO's, whose released code fully fine-tunes
        assert config.mixed_precision == "bf16" and config.gradient_checkpointing
        assert config.lora.enabled != (config.method == "tpo")


def test_every_training_method_has_a_world_recipe():
    methods = {load_config(TrainConfig, r.path).method for r in TRAIN if r.name.startswith("world/")}
    assert methods == set(METHODS)


def test_world_recipes_load_and_are_the_defaults_the_demo_builds():
    # The demo makes its world and base from WorldConfig() and PretrainConfig() (no file), and these
    # recipes' headers say they are that world and base: they must hold the same values.
    assert sorted(WORLD_CONFIGS) == [r.name for r in WORLD]
    for recipe in WORLD:
        cls, _ = WORLD_CONFIGS[recipe.name]
        config = load_config(cls, recipe.path)
        config.validate()
        assert config == cls()


def test_eval_recipes_load_and_the_demo_evaluates_with_world():
    from vlalign.eval.run import EvalConfig

    configs = {r.name: load_config(EvalConfig, r.path) for r in EVAL}
    assert configs["world"] == EvalConfig(pope_mode="logits")  # what the demo evaluates with, by this recipe
    assert configs["llava_pope"].pope_suffix == "\nAnswer the question using a single word or phrase."


@pytest.mark.parametrize("recipe", TRAIN + WORLD + EVAL, ids=lambda r: f"{r.kind}:{r.name}")
def test_header_command_runs_the_recipe_by_name(recipe):
    from vlalign import cli

    assert recipe.path.read_text().startswith("# vlalign ")  # the first line is the command
    words = shlex.split(recipe.command)
    assert words[0] == "vlalign"
    args = cli.build_parser().parse_args(words[1:])  # a valid command line, nothing run
    assert args.config == recipe.name
    assert resolve_recipe(args.config, recipe.kind) == recipe.path
    expected = {"train": "cmd_train", "eval": "cmd_eval"}.get(recipe.kind) or WORLD_CONFIGS[recipe.name][1]
    assert args.func.__name__ == expected and args.func.__module__.startswith("vlalign.cli.")


@pytest.mark.parametrize("recipe", TRAIN + WORLD + EVAL, ids=lambda r: f"{r.kind}:{r.name}")
def test_header_keeps_why_not_measurements_which_docs_list(recipe):
    header = []
    for line in recipe.path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert any(line.startswith("# Why: ") for line in header)
    assert not any("Measured" in line for line in header)
    assert f"### `{recipe.name}`" in (REPO / "docs" / "recipes.md").read_text()


def test_resolve_recipe_finds_names_with_or_without_yaml():
    assert resolve_recipe("world/tpo", "train") == ROOT / "train" / "world" / "tpo.yaml"
    assert resolve_recipe("world/tpo.yaml", "train") == ROOT / "train" / "world" / "tpo.yaml"
    assert resolve_recipe("llava15_7b/fisao_dpo", "train") == ROOT / "train" / "llava15_7b" / "fisao_dpo.yaml"
    assert resolve_recipe("default", "world") == ROOT / "world" / "default.yaml"
    assert resolve_recipe("pretrain.yaml", "world") == ROOT / "world" / "pretrain.yaml"


def test_resolve_recipe_returns_an_existing_file_as_is(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("lr: 1.0e-5\n")
    assert resolve_recipe(str(path), "train") == path
    assert resolve_recipe(path, "world") == path
    # A file wins over a recipe of the same name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "dpo.yaml").write_text("lr: 1.0e-5\n")
    assert resolve_recipe("world/dpo.yaml", "train") == Path("world/dpo.yaml")


@pytest.mark.parametrize("name, kind", [("world/ppo", "train"), ("default", "train"), ("world/dpo", "world"),
                                        ("recipes/train/world_dpo.yaml", "train"), ("../world/default", "train")])
def test_an_unknown_name_is_a_one_line_user_error_listing_the_names(name, kind):
    with pytest.raises(UserError) as err:
        resolve_recipe(name, kind)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{name}: ")
    assert all(r.name in message for r in list_recipes(kind))


def test_an_unknown_kind_is_a_user_error():
    with pytest.raises(UserError, match="unknown recipe kind 'video'"):
        list_recipes("video")
    with pytest.raises(UserError, match="no generate recipe is shipped"):
        resolve_recipe("mine", "generate")


def test_cli_recipes_lists_every_recipe_aligned(capsys):
    from vlalign.cli import main

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list_recipes())
    for line, recipe in zip(lines, list_recipes(), strict=True):
        name, command = line.split(maxsplit=1)
        assert name == recipe.name and command == recipe.command
    assert len({line.index(" vlalign ") for line in lines}) == 1  # the commands start in one column

    assert main(["recipes", "--kind", "world"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [r.name for r in WORLD]


@pytest.mark.parametrize("argv, names", [
    (["train", "--config", "world/ppo", "--model", "m", "--data", "d", "--out", "o"], TRAIN),
    (["world", "make", "--config", "huge", "--out", "o"], WORLD),
    (["world", "pretrain", "--config", "huge", "--world", "w", "--out", "o"], WORLD),
    (["world", "align-patches", "--config", "huge", "--world", "w", "--base", "b"], WORLD),
    (["eval", "pope", "--config", "huge", "--model", "m", "--data", "d"], EVAL),
])
def test_cli_config_takes_recipe_names(argv, names, capsys, tmp_path, monkeypatch):
    from vlalign.cli import main

    monkeypatch.chdir(tmp_path)  # nothing is written: the name fails before any work
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vlalign: error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"vlalign: error: {argv[argv.index('--config') + 1]}: ")
    assert all(r.name in errors[0] for r in names)
    assert list(tmp_path.iterdir()) == []


def test_cli_train_loads_a_recipe_by_name(capsys, tmp_path, monkeypatch):
    from vlalign.cli import main

    # The override makes the recipe invalid: the error names the shipped file the name resolved to.
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "world/dpo", "--set", "lr=-1", "--model", "m", "--data", "d", "--out", "o"]) == 2
    assert f"{ROOT / 'train' / 'world' / 'dpo.yaml'}, --set lr=-1: beta and lr must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("method", [*DEMO_METHODS, "fisao-dpo"])
def test_demo_recipe_path_is_the_shipped_world_recipe(method):
    from vlalign.demo import recipe_path

    assert recipe_path(method) == ROOT / "train" / "world" / f"{method.replace('-', '_')}.yaml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a clean copy of the project (no stale build/ of the checkout in it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO / "src", tmp / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(tmp)], check=True, capture_output=True)
    (path,) = (tmp / "dist").glob("vlalign-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_every_recipe(wheel):
    names = set(wheel.namelist())
    recipes = {f"vlalign/recipes/{p.relative_to(ROOT).as_posix()}" for p in ROOT.rglob("*.yaml")
               if p.parent.name != "launch"}
    assert len(recipes) == len(list_recipes())
    assert recipes | {"vlalign/recipes/__init__.py", "vlalign/py.typed"} <= names
    launch = {f"vlalign/recipes/launch/{launch_config(n).name}" for n in launch_configs()}  # the engines' configs
    assert len(launch) == 4 and launch <= names


def test_recipes_are_found_from_the_installed_wheel(wheel, tmp_path):
    # The wheel's files alone (no site-packages, so not this checkout's editable install), away from the repo.
    wheel.extractall(tmp_path / "site")
    code = ("import vlalign.recipes as r; print(r.__file__); "
            "print(len(r.list_recipes()), r.resolve_recipe('world/dpo', 'train').is_file())")
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path / "site")}, check=True)
    where, result = done.stdout.splitlines()
    assert Path(where).is_relative_to(tmp_path / "site")
    assert result == f"{len(list_recipes())} True"
