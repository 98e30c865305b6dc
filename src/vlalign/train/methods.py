"""One training step's loss for each method, from the policy, a reference and a batch of pairs.

The model calls are :mod:`vlalign.logps`'s; the math is :mod:`vlalign.losses`'s. A reference
is a function ``(batch, extra_targets, record_rows) -> PairLogps`` evaluated without gradients, so a frozen
copy, the adapter-disabled policy and precomputed values all look alike here.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from PIL import Image

from vlalign.data.corrupt import diffusion_noise, to_pil, to_tensor
from vlalign.logps import PairBatch, PairLogps, pair_logps, response_argmax, split_second_images, with_second_images
from vlalign.losses.dpo import DPOOutput, dpo_loss, sequence_logps, sft_loss
from vlalign.losses.povid import povid_loss, povid_paper_loss
from vlalign.losses.tpo import calibrated_weights, tpo_loss
from vlalign.rewards.visual_anchor import visual_anchor_scores
from vlalign.train.config import TrainConfig
from vlalign.train.reference import Reference



@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, float]


def _metrics(out: DPOOutput, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}rewards/chosen": out.chosen_rewards.mean().item(),
            f"{prefix}rewards/rejected": out.rejected_rewards.mean().item(),
            f"{prefix}rewards/margin": out.margins.mean().item(),
            f"{prefix}rewards/accuracy": out.accuracies.mean().item()}


def _with_sft(loss: torch.Tensor, pol: PairLogps, config: TrainConfig) -> torch.Tensor:
    """``loss`` plus ``sft_weight`` times the policy's mean per-token NLL of the chosen answers."""
    return loss + config.sft_weight * sft_loss(pol.chosen, pol.chosen_mask).mean() if config.sft_weight else loss


def corrupt_pixels(processor, images: Sequence[Image.Image], step: int, mode: str,
                   generator: torch.Generator) -> torch.Tensor:
    """POVID's corrupted image, in [0, 1] pixel space before the processor, then processed as usual."""
    noisy = [to_pil(diffusion_noise(to_tensor(im), step, mode=mode, generator=generator)) for im in images]
    return processor.image_processor(noisy, return_tensors="pt")["pixel_values"]


def dpo_step(policy, reference: Reference, batch: PairBatch, rows: list[int], config: TrainConfig) -> StepOutput:
    """Sigmoid DPO (Rafailov et al. 2023), plus ``sft_weight`` times the chosen NLL."""
    pol = pair_logps(policy, batch)
    ref = reference(batch, None, rows)
    out = dpo_loss(sequence_logps(pol.chosen, pol.chosen_mask), sequence_logps(pol.rejected, pol.rejected_mask),
                   sequence_logps(ref.chosen, ref.chosen_mask), sequence_logps(ref.rejected, ref.rejected_mask),
                   beta=config.beta, label_smoothing=config.label_smoothing)
    loss = _with_sft(out.loss, pol, config)
    return StepOutput(loss, {"loss": loss.item(), **_metrics(out)})


def povid_step(policy, reference: Reference, batch: PairBatch, rows: list[int], config: TrainConfig,
               noisy_pixels: torch.Tensor) -> StepOutput:
    """POVID stage 2 (Zhou et al. 2024): chosen vs. injected text, and chosen vs. noise-triggered tokens.

    The noise-triggered answer is teacher-forced on the chosen response under the corrupted
    image: the policy's argmax token at every position. Policy and reference then score those
    same token ids under the clean image (the reference code lets the reference pick its own
    argmax, so the two log-ratios compare different sequences).
    """
    noisy_ids = response_argmax(policy, batch, noisy_pixels)
    pol = pair_logps(policy, batch, extra_targets=noisy_ids)
    ref = reference(batch, noisy_ids, rows)
    seq = sequence_logps
    args = (seq(pol.chosen, pol.chosen_mask), seq(pol.rejected, pol.rejected_mask),
            seq(pol.chosen_extra, pol.chosen_mask), seq(ref.chosen, ref.chosen_mask),
            seq(ref.rejected, ref.rejected_mask), seq(ref.chosen_extra, ref.chosen_mask))
    if config.povid_form == "paper":
        out = povid_paper_loss(*args, alpha=config.povid_alpha, beta1=config.povid_beta1, beta2=config.povid_beta2,
                               beta=config.beta)
        loss, metrics = out.loss, _metrics(out)
    else:
        both = povid_loss(*args, beta=config.beta, weights=config.povid_weights, label_smoothing=config.label_smoothing)
        loss, metrics = both.loss, {**_metrics(both.text), **_metrics(both.noise, "noise/")}
    loss = _with_sft(loss, pol, config)
    b = batch.num_pairs
    chosen_ids = torch.full_like(noisy_ids, batch.pad_token_id)
    chosen_ids[pol.chosen_mask] = batch.input_ids[:b][batch.response_mask[:b]]  # left-aligned, as the logps
    flipped = (noisy_ids != chosen_ids) & pol.chosen_mask
    metrics["noise/flipped_tokens"] = (flipped.sum() / pol.chosen_mask.sum()).item()  # share the noise changed
    return StepOutput(loss, {"loss": loss.item(), **metrics})


def tpo_step(policy, reference: Reference, batch: PairBatch, rows: list[int], config: TrainConfig,
             noisy_pixels: torch.Tensor) -> StepOutput:
    """TPO (Gu, Wang et al. 2024): DPO over log p + log c, c from each model's clean-minus-corrupted scores.

    Teacher-forced passes over both answers: policy and reference, each with the clean and the
    corrupted image, the two images in one batched pass (``tpo_one_pass``). Under
    ``detach_weights`` the policy's corrupted pass runs apart, without a graph.
    """
    noisy = replace(batch, pixel_values=noisy_pixels)
    both = with_second_images(batch, noisy_pixels) if config.tpo_one_pass else None
    if both is not None:
        ref, ref_noisy = split_second_images(reference(both, None, rows))
    else:
        ref, ref_noisy = reference(batch, None, rows), reference(noisy, None, rows)
    if both is not None and not config.detach_weights:
        pol, pol_noisy = split_second_images(pair_logps(policy, both))
    else:  # the corrupted pass needs no graph when c is detached, so it runs apart
        pol = pair_logps(policy, batch)
        with torch.no_grad() if config.detach_weights else nullcontext():
            pol_noisy = pair_logps(policy, noisy)
    a = config.tpo_a
    (pol_sc, pol_sr), (ref_sc, ref_sr) = (visual_anchor_scores(clean, corrupt, config.tpo_score)
                                          for clean, corrupt in ((pol, pol_noisy), (ref, ref_noisy)))
    out = tpo_loss(pol.chosen, pol.rejected, ref.chosen, ref.rejected, pol.chosen_mask, pol.rejected_mask,
                   calibrated_weights(pol_sc, True, a), calibrated_weights(pol_sr, False, a),
                   calibrated_weights(ref_sc, True, a), calibrated_weights(ref_sr, False, a),
                   beta=config.beta, label_smoothing=config.label_smoothing, detach_weights=config.detach_weights)
    loss = _with_sft(out.loss, pol, config)
    # Mean score of chosen and rejected tokens: does the image support the chosen answer more?
    score_chosen = (pol_sc * pol.chosen_mask).sum() / pol.chosen_mask.sum()
    score_rejected = (pol_sr * pol.rejected_mask).sum() / pol.rejected_mask.sum()
    return StepOutput(loss, {"loss": loss.item(), **_metrics(out), "tpo/score_chosen": score_chosen.item(),
                             "tpo/score_rejected": score_rejected.item()})
