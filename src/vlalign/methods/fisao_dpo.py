"""FiSAO-DPO (beyond the paper; CSR's recipe with FiSAO's token scores): each image's best sampled answer
against its worst, trained with token-weighted DPO.

Rounds sample and score as FiSAO's do (:mod:`vlalign.methods.fisao`). The answers' summed (or
mean) mention rewards rank them, and each image whose answers do not all tie gives one pair
(:func:`vlalign.rewards.verifier.best_and_worst`); the round trains on those pairs and no others,
so a round with nothing to prefer trains nothing. Loss:
:func:`vlalign.losses.fisao.token_weighted_dpo_loss` (weights 1 +- ``fisao.token_weight`` times the
mention's reward), plus ``sft_weight`` times the chosen NLL.
"""

from __future__ import annotations

from typing import Any

import torch

from vlalign.logps import PairLogps
from vlalign.losses.fisao import dpo_token_weights, token_weighted_dpo_loss
from vlalign.methods.base import StepOutput, dpo_metrics, with_sft
from vlalign.methods.fisao import FiSAO, Rollout, mention_token_rewards, pad_rows
from vlalign.rewards.verifier import best_and_worst

__all__ = ["FiSAODPO"]


class FiSAODPO(FiSAO):
    name = "fisao-dpo"
    scores_old_logps = False  # DPO needs only the reference's log-probs
    progress_metrics = {"margin": "rewards/margin", "acc": "rewards/accuracy"}

    @classmethod
    def pairs_per_image(cls, config) -> int:
        return 1

    def round_pairs(self, num_images: int, mention_rows: list[list[dict[str, Any]]],
                    metrics: dict[str, float]) -> list[tuple[int, int]]:
        """Each image's (best, worst) answers; images whose answers all tie give none."""
        settings = self.config.fisao
        totals = [sum(m["reward"] for m in row) / (max(1, len(row)) if settings.rank_by == "mean" else 1)
                  for row in mention_rows]
        preferred = best_and_worst(totals, settings.samples)
        metrics["fisao_dpo/pairs"] = float(len(preferred))
        metrics["fisao_dpo/chosen_total"] = sum(totals[a] for a, _ in preferred) / max(1, len(preferred))
        metrics["fisao_dpo/rejected_total"] = sum(totals[b] for _, b in preferred) / max(1, len(preferred))
        return preferred

    def finish_rollout(self, rollout: Rollout, old, rewards, mention_rows, width: int) -> None:
        """Token weights: 1 + w * reward on the best answer's mention tokens, 1 - w * reward on the worst's."""
        per_token = pad_rows([mention_token_rewards(row, len(r)) for row, r in zip(mention_rows, rewards)], width)
        rollout.weights = torch.ones(len(rollout.answers), width)
        for a, b in rollout.pairs:
            rollout.weights[a] = dpo_token_weights(per_token[a], True, self.config.fisao.token_weight)
            rollout.weights[b] = dpo_token_weights(per_token[b], False, self.config.fisao.token_weight)

    def micro_loss(self, pol: PairLogps, chunk: list[tuple[int, int]], ro: Rollout, index: int) -> StepOutput:
        """Token-weighted DPO on a micro-batch of (best, worst) pairs: a mean over pairs, as DPO's."""
        chosen, rejected = [a for a, _ in chunk], [b for _, b in chunk]
        ref_c, w_c = (t[chosen, :pol.chosen.shape[1]].to(self.device) for t in (ro.ref_logps, ro.weights))
        ref_r, w_r = (t[rejected, :pol.rejected.shape[1]].to(self.device) for t in (ro.ref_logps, ro.weights))
        out = token_weighted_dpo_loss(pol.chosen, pol.rejected, ref_c, ref_r, pol.chosen_mask, pol.rejected_mask,
                                      w_c, w_r, beta=self.config.beta, label_smoothing=self.config.label_smoothing)
        loss = with_sft(out.loss, pol, self.config.sft_weight)
        return StepOutput(loss * self.step_share(index, chunk), {"loss": loss.item(), **dpo_metrics(out), **ro.metrics})

    def loss_units(self, chunk: list[tuple[int, int]]) -> int:
        """What a micro-batch's loss is a mean over: pairs, as DPO's."""
        return len(chunk)
