"""vlalign: preference alignment against hallucination in vision-language models.

The names a user calls, one import away (``from vlalign import TrainConfig, evaluate``); each is
imported on first use, so ``import vlalign`` stays light. The training loop is
``from vlalign.train import train``: ``vlalign.train`` is its subpackage.
"""

from __future__ import annotations

import importlib
from typing import Any

from vlalign.version import __version__

_EXPORTS = {
    "load_vlm": "vlalign.models.load", "LoadedVLM": "vlalign.models.load",
    "adapter_for": "vlalign.models.adapters",
    "read_records": "vlalign.data.sources", "PreferenceRecord": "vlalign.data.records",
    "collate_pairs": "vlalign.logps", "pair_logps": "vlalign.logps", "Scorer": "vlalign.logps",
    "dpo_loss": "vlalign.losses.dpo", "tpo_loss": "vlalign.losses.tpo", "povid_loss": "vlalign.losses.povid",
    "fisao_loss": "vlalign.losses.fisao", "token_weighted_dpo_loss": "vlalign.losses.fisao",
    "METHODS": "vlalign.methods",
    "TrainConfig": "vlalign.train.config",
    "EvalConfig": "vlalign.eval.run", "evaluate": "vlalign.eval.run",
    "load_config": "vlalign.config", "list_recipes": "vlalign.recipes", "resolve_recipe": "vlalign.recipes",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vlalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
