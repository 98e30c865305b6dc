"""Training methods as plug-ins, and the registry the training loop looks them up in by name.

A method is one module: its config dataclass (a section of the training config named after
it), its micro-batches or rounds, and its loss; see :class:`vlalign.methods.base.Method` for the
protocol the loop calls. Adding one is a module plus an entry here.
"""

from __future__ import annotations

from vlalign.methods.base import Method, Setup, StepOutput, dpo_metrics, with_sft
from vlalign.methods.dpo import DPO, dpo_step
from vlalign.methods.fisao import FiSAO, FisaoSettings, load_prompts
from vlalign.methods.fisao_dpo import FiSAODPO
from vlalign.methods.pairs import PairMethod, collate
from vlalign.methods.povid import POVID, POVIDConfig
from vlalign.methods.tpo import TPO, TPOConfig

__all__ = ["DPO", "METHODS", "POVID", "TPO", "FiSAO", "FiSAODPO", "FisaoSettings", "Method",
           "POVIDConfig", "PairMethod", "Setup", "StepOutput", "TPOConfig", "collate", "dpo_metrics", "dpo_step",
           "load_prompts", "with_sft"]

METHODS: dict[str, type[Method]] = {m.name: m for m in (DPO, POVID, TPO, FiSAO, FiSAODPO)}
