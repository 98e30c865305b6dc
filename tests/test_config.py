"""vlalign.config: YAML + overrides into typed dataclasses, with named errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from vlalign.config import load_config
from vlalign.errors import UserError


@dataclass
class Inner:
    width: int = 4
    ratio: float = 0.5


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    inner: Inner = field(default_factory=Inner)
    tags: list[str] | None = None
    span: tuple[float, float] = (0.1, 0.2)


def test_defaults_yaml_and_overrides_compose(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\ninner:\n  width: 8\n")
    config = load_config(Outer, path, ["inner.ratio=1", "tags=[a, b]", "span=[0.3, 0.4]"])
    assert config == Outer(name="x", steps=20, inner=Inner(width=8, ratio=1.0), tags=["a", "b"], span=(0.3, 0.4))
    assert isinstance(config.inner.ratio, float)


def test_override_wins_over_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\n")
    assert load_config(Outer, path, ["steps=30"]).steps == 30


@pytest.mark.parametrize("override, message", [
    ("stpes=3", "unknown field stpes"),
    ("inner.depth=3", "unknown field inner.depth"),
    ("steps=true", "field steps must be int"),
    ("inner=3", "inner must be a mapping"),
    ("tags=word", "field tags must be a list"),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        load_config(Outer, None, [override])


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(Outer, tmp_path / "none.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(Outer, path)


def test_float_fields_take_exponents_without_a_dot():
    from vlalign.train.config import TrainConfig

    assert load_config(TrainConfig, None, ["lr=5e-5", "beta=1"]).lr == 5e-5
    with pytest.raises(UserError, match="field lr must be float, got 'fast'"):
        load_config(TrainConfig, None, ["lr=fast"])


def test_errors_name_where_the_value_came_from(tmp_path):
    """The override (``--set KEY=VALUE``), the flag (``--key``) or the file: never a bare ``defaults:``."""
    from vlalign.train.config import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text("steps: true\n")
    with pytest.raises(UserError, match=f"^{path}: field steps must be int"):
        load_config(Outer, path)
    path.write_text("steps: 3\ninner:\n  width: 2\n")
    for overrides, message in ((["steps=true"], "--set steps=true: field steps must be int"),
                               (["stpes=3"], "--set stpes=3: unknown field stpes"),
                               (["inner=3"], "--set inner=3: inner must be a mapping"),
                               (["inner.ratio=x"], "--set inner.ratio=x: field inner.ratio must be float")):
        with pytest.raises(UserError, match="^" + re.escape(message)):
            load_config(Outer, path, overrides)
    with pytest.raises(UserError, match="^--steps: field steps must be int"):
        load_config(Outer, None, values={"steps": "many"}, label="cmd")
    with pytest.raises(UserError, match=r"^--set lr=-1: beta and lr must be positive"):
        load_config(TrainConfig, None, ["lr=-1"], label="train")
    path.write_text("lr: -1\n")
    with pytest.raises(UserError, match=f"^{path}: beta and lr must be positive"):
        load_config(TrainConfig, path, ["seed=3"], label="train")
    with pytest.raises(UserError, match="^" + re.escape(f"{path}, --set beta=0.2: beta and lr must be positive")):
        load_config(TrainConfig, path, ["beta=0.2"], label="train")  # a cross-field check names both


def test_the_train_command_names_the_set_override(tmp_path, capsys):
    from vlalign.cli import main

    assert main(["train", "--method", "dpo", "--model", "m", "--data", "d.jsonl", "--out", str(tmp_path / "run"),
                 "--set", "lr=fast"]) == 2
    assert capsys.readouterr().err.strip() == "vlalign: error: --set lr=fast: field lr must be float, got 'fast'"
