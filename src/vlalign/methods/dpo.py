"""DPO (Rafailov et al. 2023, arXiv 2305.18290): the sigmoid loss on sequence log-ratios, plus an optional SFT term."""

from __future__ import annotations

from vlalign.logps import PairBatch
from vlalign.losses.dpo import dpo_loss, sequence_logps
from vlalign.methods.base import StepOutput, dpo_metrics, with_sft
from vlalign.methods.pairs import PairMethod

__all__ = ["DPO", "dpo_step"]


def dpo_step(policy, reference, batch: PairBatch, rows: list[int], config) -> StepOutput:
    """Sigmoid DPO, plus ``sft_weight`` times the chosen NLL.

    ``policy`` is the prepared :class:`vlalign.logps.Scorer`; ``reference(batch, extra, rows)``
    gives the reference's log-probs without gradients.
    """
    pol = policy(batch)
    ref = reference(batch, None, rows)
    out = dpo_loss(sequence_logps(pol.chosen, pol.chosen_mask), sequence_logps(pol.rejected, pol.rejected_mask),
                   sequence_logps(ref.chosen, ref.chosen_mask), sequence_logps(ref.rejected, ref.rejected_mask),
                   beta=config.beta, label_smoothing=config.label_smoothing)
    loss = with_sft(out.loss, pol, config.sft_weight)
    return StepOutput(loss, {"loss": loss.item(), **dpo_metrics(out)})


class DPO(PairMethod):
    name = "dpo"

    def step(self, policy, reference, batch, rows, images, step):
        return dpo_step(policy, reference, batch, rows, self.config)
