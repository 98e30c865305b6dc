"""POVID (Zhou et al. 2024, arXiv 2402.11411), stage 2: chosen vs. injected text, and chosen vs. noise-triggered tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vlalign.logps import PairBatch
from vlalign.losses.dpo import sequence_logps
from vlalign.losses.povid import povid_loss, povid_paper_loss
from vlalign.methods.base import StepOutput, dpo_metrics, with_sft
from vlalign.methods.pairs import CorruptingPairMethod

__all__ = ["POVID", "POVIDConfig", "povid_step"]


@dataclass
class POVIDConfig:
    """POVID's settings: the reference code's 0.5/0.5 average of two DPO terms, or the paper's single sigmoid."""

    form: str = "code"  # code | paper
    weights: list[float] = field(default_factory=lambda: [0.5, 0.5])  # code form: text term, noise term
    alpha: float = 1.0  # paper form
    beta1: float = 1.0
    beta2: float = 1.0
    noise_step: int = 500  # diffusion step of the corrupted image (fresh, seeded noise every step)
    noise_mode: str = "clip"  # clip | wrap (the reference code's uint8 wrap-around)

    def validate(self) -> None:
        if self.form not in ("code", "paper"):
            raise ValueError(f"povid.form must be code or paper (got {self.form!r})")
        check_noise("povid", self.noise_step, self.noise_mode)


def check_noise(section: str, step: int, mode: str) -> None:
    if not 0 <= step < 1000:
        raise ValueError(f"{section}.noise_step must be in [0, 999]")
    if mode not in ("clip", "wrap"):
        raise ValueError(f"{section}.noise_mode must be clip or wrap (got {mode!r})")


def povid_step(policy, reference, batch: PairBatch, rows: list[int], config, noisy_pixels: torch.Tensor) -> StepOutput:
    """POVID's loss on a batch whose corrupted images are ``noisy_pixels``.

    The noise-triggered answer is teacher-forced on the chosen response under the corrupted
    image: the policy's argmax token at every position. Policy and reference then score those
    same token ids under the clean image (the reference code lets the reference pick its own
    argmax, so the two log-ratios compare different sequences).
    """
    settings = config.povid
    noisy_ids = policy(batch, argmax_pixel_values=noisy_pixels)
    pol = policy(batch, extra_targets=noisy_ids)
    ref = reference(batch, noisy_ids, rows)
    seq = sequence_logps
    args = (seq(pol.chosen, pol.chosen_mask), seq(pol.rejected, pol.rejected_mask),
            seq(pol.chosen_extra, pol.chosen_mask), seq(ref.chosen, ref.chosen_mask),
            seq(ref.rejected, ref.rejected_mask), seq(ref.chosen_extra, ref.chosen_mask))
    if settings.form == "paper":
        out = povid_paper_loss(*args, alpha=settings.alpha, beta1=settings.beta1, beta2=settings.beta2,
                               beta=config.beta)
        loss, metrics = out.loss, dpo_metrics(out)
    else:
        both = povid_loss(*args, beta=config.beta, weights=settings.weights, label_smoothing=config.label_smoothing)
        loss, metrics = both.loss, {**dpo_metrics(both.text), **dpo_metrics(both.noise, "noise/")}
    loss = with_sft(loss, pol, config.sft_weight)
    b = batch.num_pairs
    chosen_ids = torch.full_like(noisy_ids, batch.pad_token_id)
    chosen_ids[pol.chosen_mask] = batch.input_ids[:b][batch.response_mask[:b]]  # left-aligned, as the logps
    flipped = (noisy_ids != chosen_ids) & pol.chosen_mask
    metrics["noise/flipped_tokens"] = (flipped.sum() / pol.chosen_mask.sum()).item()  # share the noise changed
    return StepOutput(loss, {"loss": loss.item(), **metrics})


class POVID(CorruptingPairMethod):
    name = "povid"
    section = "povid"
    step_with_noise = staticmethod(povid_step)
