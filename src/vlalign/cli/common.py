"""What the subcommands share: progress bars, and a config built from a recipe, the flags and ``--set``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["CountBar", "add_config_flags", "progress", "quiet_transformers", "recipe", "settings", "stage_bars",
           "step_bars"]


def quiet_transformers() -> None:
    """Saving and loading print their own shard bars; vlalign draws one bar per stage instead."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def progress(desc: str, total: int, unit: str = "img"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


class CountBar:
    """An ``on_progress(done, total)`` callback: one bar, made at the first call (when total is known)."""

    def __init__(self, desc: str, unit: str):
        self.desc, self.unit, self.bar = desc, unit, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress(self.desc, total, self.unit)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def step_bars():
    """An ``on_step`` callback drawing one progress bar per training stage."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def on_step(stage: str, step: int, total: int, metrics: dict[str, float]) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"pretrain {stage}", unit="step", dynamic_ncols=True)
        bar.update(step - bar.n)
        bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
        if step >= total:
            bar.close()

    return on_step


def stage_bars():
    """An ``on_progress(stage, done, total)`` callback drawing one bar per evaluation stage."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"eval {stage}", unit="answer", dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return on_progress


def recipe(config: str | None, kind: str) -> Path | None:
    """``--config``: a recipe name (``vlalign recipes``) or a YAML file; None stays None."""
    from vlalign.recipes import resolve_recipe

    return None if config is None else resolve_recipe(config, kind)


def settings(cls, args: argparse.Namespace, kind: str, label: str, flags: dict[str, str] | None = None):
    """``cls`` from ``--config`` (a recipe name or a YAML file), then the flags given, then ``--set``.

    ``flags`` maps flag dests to config fields (dotted for sections); by default every field
    whose name is also a flag's dest. A flag left out (None) leaves the config's value.
    """
    import dataclasses

    from vlalign.config import load_config

    if flags is None:
        flags = {f.name: f.name for f in dataclasses.fields(cls)}
    values = {field: getattr(args, dest) for dest, field in flags.items() if getattr(args, dest, None) is not None}
    return load_config(cls, recipe(args.config, kind), args.set, values, label)


def add_config_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--config", help=f"{what} fields: a recipe name (vlalign recipes) or a YAML file; the flags "
                        "below set the fields of the same name")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")

