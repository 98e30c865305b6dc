"""TPO, Token Preference Optimization (Gu, Wang et al. 2024, arXiv 2412.14487): DPO over log p + log c.

c comes from each model's own visual-anchored score s = z(clean image) - z(corrupted image)
(:mod:`vlalign.rewards.visual_anchor`, :mod:`vlalign.losses.tpo`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from vlalign.logps import PairBatch, split_second_images, with_second_images
from vlalign.losses.tpo import calibrated_weights, tpo_loss
from vlalign.methods.base import StepOutput, dpo_metrics, with_sft
from vlalign.methods.pairs import CorruptingPairMethod
from vlalign.methods.povid import check_noise
from vlalign.rewards.visual_anchor import visual_anchor_scores

__all__ = ["TPO", "TPOConfig", "tpo_step"]


@dataclass
class TPOConfig:
    """TPO's settings: token weights c = a + sigmoid(s) on chosen tokens, a + 1 - sigmoid(s) on rejected ones."""

    a: float = 0.5
    score: str = "logits"  # logits (the reference code) | logps
    detach_weights: bool = False  # stop gradients through the policy's c (the reference code lets them flow)
    one_pass: bool = True  # clean and corrupted images in one batched pass (false: two, half the activations)
    noise_step: int = 500  # diffusion step of the corrupted image (fresh, seeded noise every step)
    noise_mode: str = "clip"  # clip | wrap (the reference code's uint8 wrap-around)

    def validate(self) -> None:
        if self.a < 0:
            raise ValueError("tpo.a must be >= 0")
        if self.score not in ("logits", "logps"):
            raise ValueError(f"tpo.score must be logits or logps (got {self.score!r})")
        check_noise("tpo", self.noise_step, self.noise_mode)


def tpo_step(policy, reference, batch: PairBatch, rows: list[int], config, noisy_pixels: torch.Tensor) -> StepOutput:
    """TPO's loss on a batch whose corrupted images are ``noisy_pixels``.

    Teacher-forced passes over both answers: policy and reference, each with the clean and the
    corrupted image, the two images in one batched pass (``tpo.one_pass``). Under
    ``tpo.detach_weights`` the policy's corrupted pass runs apart, without a graph.
    """
    settings = config.tpo
    noisy = batch.with_pixels(noisy_pixels)
    both = with_second_images(batch, noisy_pixels) if settings.one_pass else None
    if both is not None:
        ref, ref_noisy = split_second_images(reference(both, None, rows))
    else:
        ref, ref_noisy = reference(batch, None, rows), reference(noisy, None, rows)
    if both is not None and not settings.detach_weights:
        pol, pol_noisy = split_second_images(policy(both))
    else:  # the corrupted pass needs no graph when c is detached, so it runs apart
        pol = policy(batch)
        with torch.no_grad() if settings.detach_weights else nullcontext():
            pol_noisy = policy(noisy)
    a = settings.a
    (pol_sc, pol_sr), (ref_sc, ref_sr) = (visual_anchor_scores(clean, corrupt, settings.score)
                                          for clean, corrupt in ((pol, pol_noisy), (ref, ref_noisy)))
    out = tpo_loss(pol.chosen, pol.rejected, ref.chosen, ref.rejected, pol.chosen_mask, pol.rejected_mask,
                   calibrated_weights(pol_sc, True, a), calibrated_weights(pol_sr, False, a),
                   calibrated_weights(ref_sc, True, a), calibrated_weights(ref_sr, False, a),
                   beta=config.beta, label_smoothing=config.label_smoothing, detach_weights=settings.detach_weights)
    loss = with_sft(out.loss, pol, config.sft_weight)
    # Mean score of chosen and rejected tokens: does the image support the chosen answer more?
    score_chosen = (pol_sc * pol.chosen_mask).sum() / pol.chosen_mask.sum()
    score_rejected = (pol_sr * pol.rejected_mask).sum() / pol.rejected_mask.sum()
    return StepOutput(loss, {"loss": loss.item(), **dpo_metrics(out), "tpo/score_chosen": score_chosen.item(),
                             "tpo/score_rejected": score_rejected.item()})


class TPO(CorruptingPairMethod):
    name = "tpo"
    section = "tpo"
    step_with_noise = staticmethod(tpo_step)
