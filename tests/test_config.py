"""vlalign.config: YAML + overrides into typed dataclasses, with named errors."""

from __future__ import annotations

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
