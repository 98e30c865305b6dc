"""The protocol a training method implements, and the pieces every method's step shares.

The loop (:mod:`vlalign.train.loop`) knows no method: it builds a :class:`Setup`, asks the
method how many optimizer steps the run has, and for every micro-batch ``index`` (the run's
global micro-batch count) runs, in this order, visibly:

1. the **round phase** of an on-policy method: when :meth:`Method.round_of` gives a round the
   method has not begun, :meth:`Method.begin_round` samples, scores and saves it;
2. :meth:`Method.loss`: the micro-batch's loss and metrics, from the prepared policy scorer and
   the reference; ``None`` when the round has nothing left to train on (one process; with
   several, a zero-weight stand-in, :attr:`StepOutput.empty`, keeps every process in step).

With several processes, each takes its share of every global micro-batch, and a method's loss is
normalised over the whole optimizer step (all micro-batches, all processes), so that N processes
give the weights one process gives with the same global batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlalign.logps import PairLogps
from vlalign.losses.dpo import DPOOutput, sft_loss
from vlalign.processes import ALONE, Processes

__all__ = ["Method", "Setup", "StepOutput", "dpo_metrics", "with_sft"]


@dataclass
class StepOutput:
    """A micro-batch's loss (scalar, differentiable), its metrics, its token count and its record ids.

    ``empty``: a stand-in with zero weight, for a process that has no share of its micro-batch, so
    that every process runs the same backward passes (its metrics and tokens are not counted).
    """

    loss: torch.Tensor
    metrics: dict[str, float]
    tokens: int = 0
    ids: list[str] = field(default_factory=list)
    empty: bool = False


def dpo_metrics(out: DPOOutput, prefix: str = "") -> dict[str, float]:
    """Mean implicit rewards, margin and accuracy of a DPO-style output."""
    return {f"{prefix}rewards/chosen": out.chosen_rewards.mean().item(),
            f"{prefix}rewards/rejected": out.rejected_rewards.mean().item(),
            f"{prefix}rewards/margin": out.margins.mean().item(),
            f"{prefix}rewards/accuracy": out.accuracies.mean().item()}


def with_sft(loss: torch.Tensor, pol: PairLogps, sft_weight: float) -> torch.Tensor:
    """``loss`` plus ``sft_weight`` times the policy's mean per-token NLL of the chosen answers."""
    return loss + sft_weight * sft_loss(pol.chosen, pol.chosen_mask).mean() if sft_weight else loss


@dataclass
class Setup:
    """What the loop hands a method when the run starts.

    ``sampler`` generates with the current policy, unwrapped from any distributed wrapper (a
    :class:`vlalign.models.load.LoadedVLM` whose model is the policy's :class:`vlalign.logps.Scorer`,
    so that its ``generate`` and its forward run under the engine's hooks); ``autocast`` is Accelerate's mixed-precision context;
    ``processes`` says which process this is and gathers values from all of them;
    ``loads_whole()`` is a context in which a model the method keeps to itself (FiSAO's verifier)
    loads whole on every process (ZeRO-3 partitions a transformers model loaded outside it).
    """

    config: Any  # vlalign.train.config.TrainConfig
    data: Path
    image_root: Path | None
    out: Path
    processor: Any
    adapter: Any
    device: torch.device
    sampler: Any
    autocast: Callable[[], Any]
    resume: bool = False
    processes: Processes = ALONE
    loads_whole: Callable[[], Any] = contextlib.nullcontext
    exclude: frozenset[str] = frozenset()  # ids of the data the preflight left out (on_bad: skip)


class Method:
    """A training method. Subclasses set :attr:`name` and implement :meth:`total_steps` and :meth:`loss`."""

    name = ""
    needs_live_reference = False  # scores inputs no precomputed table has (corrupted images, sampled answers)
    reads_pairs = True  # its data are preference records (else prompts)
    progress_metrics = {"margin": "rewards/margin", "acc": "rewards/accuracy"}  # shown beside the loss: label -> key

    def __init__(self, setup: Setup):
        self.setup, self.config = setup, setup.config

    def total_steps(self) -> int:
        raise NotImplementedError

    @property
    def pairs(self):
        """The preference records a precomputed reference is computed over (None: this method has none)."""
        return None

    def summary(self) -> dict[str, Any]:
        """What the run trained on, for the loop's returned summary."""
        return {}

    def round_of(self, index: int) -> int | None:
        """The round micro-batch ``index`` belongs to; None for a method without rounds."""
        return None

    def begin_round(self, round_: int, policy, reference) -> None:
        """Make round ``round_``'s training data (on-policy methods: sample, score, save)."""

    def loss(self, policy, reference, index: int) -> StepOutput | None:
        raise NotImplementedError
