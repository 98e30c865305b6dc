"""Checkpoints that make a resumed run end exactly where an uninterrupted one does.

``out/checkpoints/step-N/`` holds the trainable weights (safetensors), the optimizer state
(tensors only, loaded with ``weights_only=True``: nothing is unpickled), the scheduler state and
the step. Everything else a step needs (data order, corruption noise) derives from the seed
and the step, so nothing more is saved. Each checkpoint is written to a temporary directory
and renamed: a run killed while saving leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlalign.errors import UserError
from vlalign.io import atomic_dir

_STEP = re.compile(r"^step-(\d+)$")


def _trainable(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler) -> Path:
    """Write ``out/checkpoints/step-{step}`` atomically; returns its path."""
    path = Path(out) / "checkpoints" / f"step-{step}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(path, overwrite=True) as tmp:
        save_file(_trainable(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "scheduler": scheduler.state_dict()}) + "\n")
    return path


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint with the highest step under ``out/checkpoints``, or None."""
    found = [(int(m.group(1)), p) for p in (Path(out) / "checkpoints").glob("step-*")
             if (m := _STEP.match(p.name)) and (p / "state.json").is_file()]
    return max(found)[1] if found else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> int:
    """Restore weights, optimizer and scheduler from ``path``; returns its step."""
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = [name for name in weights if name not in params]
    if unknown:
        raise UserError(f"{path}: checkpoint does not fit this model (e.g. {unknown[0]}); same model and config?")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    state = json.loads((path / "state.json").read_text())
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def checkpoints_from(out: Path, step: int) -> list[Path]:
    """The checkpoints under ``out/checkpoints`` at ``step`` or later."""
    return sorted(p for p in (Path(out) / "checkpoints").glob("step-*")
                  if (m := _STEP.match(p.name)) and int(m.group(1)) >= step)


def drop_checkpoints_from(out: Path, step: int) -> None:
    """Remove the checkpoints at ``step`` or later: a diverged run's states, which ``--resume`` must not pick."""
    for path in checkpoints_from(out, step):
        shutil.rmtree(path, ignore_errors=True)


# Not compared on resume: what is logged or kept (not the weights), the run directory itself (it may have
# moved), and what train records.
_NOT_COMPARED = frozenset({"save_every", "log_every", "eval_every", "out", "provenance"})


def settings_changes(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """``{field: [saved value, value now]}`` for every setting that differs (dotted names for nested ones)."""
    changed: dict[str, list[Any]] = {}
    for key in sorted(set(saved) | set(now)):
        if not prefix and key in _NOT_COMPARED:
            continue
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed.update(settings_changes(old, new, f"{prefix}{key}."))
        elif _normal(old) != _normal(new):
            changed[prefix + key] = [old, new]
    return changed


def _normal(value: Any) -> Any:
    """Paths compared without ``./`` and doubled slashes; tuples as lists (JSON has no tuple)."""
    if isinstance(value, str) and ("/" in value or value.startswith(".")):
        return os.path.normpath(value)
    return list(value) if isinstance(value, tuple) else value


def describe_changes(changed: dict[str, list[Any]]) -> str:
    """``lr (0.0001 -> 0.001), data (a.jsonl -> b.jsonl)``: the changed fields, briefly."""
    def short(value: Any) -> str:  # a string (a path) whole, a long list or section cut
        text = json.dumps(value)
        return text if isinstance(value, str) or len(text) <= 60 else text[:57] + "..."

    return ", ".join(f"{name} ({short(old)} -> {short(new)})" for name, (old, new) in changed.items())
