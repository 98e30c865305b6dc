"""The shipped recipes: run configs addressed by name, installed with the package.

A recipe is a YAML file under ``vlalign/recipes/{kind}/``: ``train`` recipes hold ``TrainConfig``
fields (``vlalign train --config world/dpo``), ``world`` recipes hold ``WorldConfig`` or
``PretrainConfig`` fields (``vlalign world make --config default``), ``eval`` recipes hold
``EvalConfig`` fields (``vlalign eval pope --config llava_pope``); ``generate`` and ``inspect``
read a YAML file of their own config's fields (none is shipped). Its name is its path under
its kind's folder without ``.yaml``. The first line of every recipe is a comment with the command
that runs it by name (a line ending in ``\\`` continues on the next comment line);
``vlalign recipes`` lists them. What each was measured to do is in ``docs/recipes.md``.

``launch/`` holds the engines' configs: DeepSpeed's for ``accelerate launch --deepspeed_config_file``
(JSON, so no header: ``docs/scaling.md`` has the command of each) and an Accelerate config for
FSDP2 (``accelerate launch --config_file``, headed by its command); ``vlalign recipes --launch NAME``
prints one's path. The DeepSpeed configs' batch, accumulation, clipping and precision are
``auto``: vlalign's train config fills them in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vlalign.errors import UserError

__all__ = ["KINDS", "ROOT", "Recipe", "header_command", "launch_config", "launch_configs", "list_recipes",
           "resolve_recipe"]

ROOT = Path(__file__).resolve().parent
KINDS = ("train", "world", "eval", "generate", "inspect")


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str  # "world/dpo", "llava15_7b/tpo" (train); "default", "pretrain" (world)
    kind: str  # "train" or "world"
    path: Path
    command: str  # the command of the header's first line, continuation lines joined


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown recipe kind {kind!r}; expected one of {', '.join(KINDS)}")


def header_command(path: Path) -> str:
    """The command on the first comment line of ``path`` ('' when the file starts otherwise)."""
    parts: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not parts and not text.startswith("vlalign "):
            break
        more = text.endswith("\\")
        parts.append(text[:-1].strip() if more else text)
        if not more:
            break
    return " ".join(parts)


def list_recipes(kind: str | None = None) -> list[Recipe]:
    """Every shipped recipe of ``kind`` (both kinds when None), sorted by kind, then name."""
    kinds = KINDS if kind is None else (kind,)
    recipes = []
    for each in kinds:
        _check_kind(each)
        folder = ROOT / each
        for path in sorted(folder.rglob("*.yaml")):
            name = path.relative_to(folder).with_suffix("").as_posix()
            recipes.append(Recipe(name, each, path, header_command(path)))
    return recipes


def resolve_recipe(name_or_path: str | Path, kind: str) -> Path:
    """An existing file as is; otherwise the shipped ``kind`` recipe of that name (".yaml" optional)."""
    _check_kind(kind)
    if Path(name_or_path).is_file():
        return Path(name_or_path)
    name = str(name_or_path).replace("\\", "/")
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    for recipe in list_recipes(kind):
        if recipe.name == name:
            return recipe.path
    names = ", ".join(r.name for r in list_recipes(kind))
    shipped = f"the {kind} recipes are {names} (vlalign recipes)" if names else f"no {kind} recipe is shipped"
    raise UserError(f"{name_or_path}: neither a file nor a {kind} recipe; {shipped}")


_LAUNCH_SUFFIXES = (".json", ".yaml")


def launch_configs() -> list[str]:
    """Names of the shipped launch configs (``fsdp2``, ``zero2``, ``zero3``, ...)."""
    return sorted(p.stem for p in (ROOT / "launch").iterdir() if p.suffix in _LAUNCH_SUFFIXES)


def launch_config(name: str) -> Path:
    """The shipped launch config ``name`` (its suffix optional)."""
    stem = Path(name).stem if Path(name).suffix in _LAUNCH_SUFFIXES else name
    for suffix in _LAUNCH_SUFFIXES:
        if (path := ROOT / "launch" / f"{stem}{suffix}").is_file():
            return path
    raise UserError(f"{name}: no such launch config; the shipped ones are {', '.join(launch_configs())}")
