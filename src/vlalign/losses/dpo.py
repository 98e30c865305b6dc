"""Direct Preference Optimization: the sigmoid loss, its cDPO label smoothing, and an SFT term.

Sources:

* DPO: Rafailov, Sharma, Mitchell, Ermon, Manning and Finn, "Direct Preference Optimization:
  Your Language Model is Secretly a Reward Model", NeurIPS 2023 (arXiv 2305.18290), Eq. 7::

      L_DPO = -log sigmoid(beta * h),
      h = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]

  and the implicit reward of Sec. 5, ``r(x, y) = beta * (log pi(y|x) - log ref(y|x))``.
* cDPO (conservative DPO): Mitchell, "A note on DPO with noisy preferences & relationship to
  IPO" (2023). With label-flip probability ``eps`` the target is a smoothed label::

      L_cDPO = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

  ``eps = 0`` is plain DPO. (TRL's DPOTrainer up to v0.28 applied this smoothing to its
  ``sigmoid`` loss; from v0.29 its ``sigmoid`` loss ignores ``label_smoothing``.)
* SFT term: Pang, Yuan, Cho, He, Sukhbaatar and Weston, "Iterative Reasoning Preference
  Optimization" (RPO, arXiv 2404.19733), which adds to DPO the negative log-likelihood of the
  chosen response divided by its length (equation number not checked here).

Shapes: ``B`` is the batch, ``L`` the padded response length. Per-token log-probs are
``(B, L)`` with a mask ``(B, L)`` (bool or 0/1 float) marking response tokens; sequence
log-probs are ``(B,)``. Everything is differentiable with respect to the policy inputs; the
rewards in :class:`DPOOutput` are detached (metrics only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DPOOutput", "dpo_loss", "sequence_logps", "sft_loss"]


def sequence_logps(token_logps: Tensor, mask: Tensor) -> Tensor:
    """Sum per-token log-probs over response tokens: ``(B, L), (B, L) -> (B,)``.

    ``mask`` is bool or 0/1 float; positions where it is false/0 contribute nothing whatever
    ``token_logps`` holds there, so padding need not be zeroed beforehand. A row with no
    response token sums to 0.
    """
    if token_logps.dim() != 2:
        raise ValueError(f"token_logps must be (B, L), got shape {tuple(token_logps.shape)}")
    if mask.shape != token_logps.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != token_logps shape {tuple(token_logps.shape)}")
    # where(), not multiply: a -inf log-prob at a padded position must not turn into NaN.
    kept = torch.where(mask.bool(), token_logps, torch.zeros_like(token_logps))
    return kept.sum(dim=-1)


def check_sequence_logps(**tensors: Tensor) -> None:
    """Raise unless every tensor is 1-D and all share one shape ``(B,)``."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(s != first for s in shapes.values()):
        raise ValueError(f"sequence log-probs must all have the same shape (B,); got {shapes}")


@dataclass(frozen=True)
class DPOOutput:
    """Per-example DPO loss and implicit rewards.

    Attributes:
        losses: ``(B,)`` per-example loss, differentiable; reduce it yourself (e.g. ``.mean()``).
        chosen_rewards: ``(B,)`` ``beta * (policy_chosen - ref_chosen)``, detached.
        rejected_rewards: ``(B,)`` ``beta * (policy_rejected - ref_rejected)``, detached.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor

    @property
    def loss(self) -> Tensor:
        """Batch mean of :attr:`losses` (scalar)."""
        return self.losses.mean()

    @property
    def margins(self) -> Tensor:
        """``(B,)`` chosen reward minus rejected reward (``beta * h``), detached."""
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracies(self) -> Tensor:
        """``(B,)`` float32, 1.0 where the chosen reward is strictly greater than the rejected one."""
        return (self.chosen_rewards > self.rejected_rewards).float()


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """Sigmoid DPO (Rafailov et al. 2023, Eq. 7) with cDPO label smoothing (Mitchell 2023).

    Args:
        policy_chosen: ``(B,)`` sequence log-prob of the chosen response under the policy.
        policy_rejected: ``(B,)`` same for the rejected response.
        ref_chosen: ``(B,)`` chosen response under the frozen reference model.
        ref_rejected: ``(B,)`` rejected response under the reference model.
        beta: KL-penalty strength, ``> 0`` (0.1 is TRL's default).
        label_smoothing: cDPO's assumed label-flip probability ``eps`` in ``[0, 0.5)``.

    Returns:
        :class:`DPOOutput` whose ``losses`` are
        ``-(1 - eps) * logsigmoid(beta * h) - eps * logsigmoid(-beta * h)`` with
        ``h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)``. Computed with
        ``F.logsigmoid``, so it stays finite for any finite ``h``.
    """
    check_sequence_logps(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                          ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")

    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    logits = beta * (chosen_logratios - rejected_logratios)
    losses = -F.logsigmoid(logits)
    if label_smoothing > 0:
        losses = (1.0 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)

    return DPOOutput(
        losses=losses,
        chosen_rewards=beta * chosen_logratios.detach(),
        rejected_rewards=beta * rejected_logratios.detach(),
    )


def sft_loss(policy_chosen_token_logps: Tensor, mask: Tensor) -> Tensor:
    """Per-example mean negative log-likelihood per token of the chosen response: ``(B,)``.

    ``-sequence_logps(logps, mask) / n_tokens`` for each row, the length-normalised NLL term
    that RPO (Pang et al. 2024) adds to DPO, usually as ``dpo.losses + alpha * sft_loss(...)``.
    Each sequence is averaged over its own tokens, so every example weighs the same in a batch
    mean. (TRL's ``"sft"`` loss type instead averages over all tokens of the batch at once,
    which weighs long responses more.) A row with no response token gives 0.

    Args:
        policy_chosen_token_logps: ``(B, L)`` per-token log-probs of the chosen response.
        mask: ``(B, L)`` bool or 0/1 float response mask.
    """
    total = sequence_logps(policy_chosen_token_logps, mask)
    n_tokens = mask.to(total.dtype).sum(dim=-1).clamp(min=1.0)
    return -total / n_tokens
