"""Training: one loop (Accelerate, PEFT) for every preference method.

``from vlalign.train import TrainConfig, train``: :func:`train` runs a whole run from its config.
Every name below is imported from its module on first use, so ``import vlalign.train`` stays light.
"""

from __future__ import annotations

from vlalign.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "vlalign.train.config": ("LoraSettings", "TrainConfig"),
    "vlalign.train.loop": ("TrainingDiverged", "evaluate_pairs", "train"),
    "vlalign.train.checkpoint": ("latest_checkpoint", "load_checkpoint", "save_checkpoint"),
    "vlalign.train.reference": ("fingerprint", "make_reference"),
    "vlalign.train.model": ("prepare_policy", "weights_dtype"),
})
