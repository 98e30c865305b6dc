"""TPO: DPO over per-token log-probs shifted by self-calibrated, visual-anchored weights.

Source: Gu, Wang et al., "Token Preference Optimization with Self-Calibrated Visual-Anchored
Rewards for Hallucination Mitigation" (arXiv 2412.14487, EMNLP 2025 Findings).

* Eq. 4, the visual-anchored score of a response token, teacher-forced:
  ``s_t = z(y_t | x, v, y_<t) - z(y_t | x, v_corrupted, y_<t)`` with ``z`` the raw logit of the
  token (the reference code's default; log-probs are an option). The model calls that give
  ``s`` live with the rest of the forwards, not here.
* Eq. 5, self-calibration with ``a = 0.5``: ``c_t = a + sigmoid(s_t)`` on chosen tokens and
  ``c_t = a + 1 - sigmoid(s_t)`` on rejected tokens, so ``c`` lies in ``(a, a + 1)`` and is 1
  where ``s = 0`` (with ``a = 0.5``).
* Eqs. 6-11: DPO in the space of ``pi * prod_t c_t``: each side's sequence log-prob becomes
  ``sum_t (log p_t + log c_t)``, for the policy with its own ``c`` and for the reference with
  its own. With every ``c = 1`` this is DPO exactly.

The reference code lets gradients flow through the policy's ``c`` (both its clean and its
corrupted forward); ``detach_weights=True`` stops them, so that ``c`` only reweighs.

Shapes: ``B`` pairs, ``L`` the padded response length; per-token tensors are ``(B, L)`` with a
bool or 0/1 response mask of the same shape.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlalign.losses.dpo import DPOOutput, dpo_loss, sequence_logps

__all__ = ["calibrated_weights", "tpo_loss"]


def calibrated_weights(scores: Tensor, chosen: bool, a: float = 0.5) -> Tensor:
    """TPO Eq. 5: ``a + sigmoid(s)`` for chosen tokens, ``a + 1 - sigmoid(s)`` for rejected ones.

    A token the image supports (``s > 0``) weighs more in the chosen answer and less in the
    rejected one. Same shape as ``scores``; differentiable unless ``scores`` is detached.
    """
    if a < 0:
        raise ValueError(f"a must be >= 0, got {a}")
    p = torch.sigmoid(scores)
    return a + (p if chosen else 1.0 - p)


def _weighted(token_logps: Tensor, weights: Tensor, mask: Tensor, detach: bool) -> Tensor:
    """``sum_t (log p_t + log c_t)`` over the response mask: ``(B, L) -> (B,)``."""
    if weights.shape != token_logps.shape:
        raise ValueError(f"weights shape {tuple(weights.shape)} != token_logps shape {tuple(token_logps.shape)}")
    # Padding may hold any weight (even 0): only masked-in positions take its log.
    safe = torch.where(mask.bool(), weights, torch.ones_like(weights))
    return sequence_logps(token_logps + torch.log(safe.detach() if detach else safe), mask)


def tpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    chosen_mask: Tensor,
    rejected_mask: Tensor,
    policy_chosen_weights: Tensor,
    policy_rejected_weights: Tensor,
    ref_chosen_weights: Tensor,
    ref_rejected_weights: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    detach_weights: bool = False,
) -> DPOOutput:
    """TPO's objective (Eqs. 6-11): :func:`dpo_loss` over ``sum_t (log p_t + log c_t)``.

    Args:
        policy_chosen, policy_rejected: ``(B, Lc)``, ``(B, Lr)`` per-token log-probs under the policy.
        ref_chosen, ref_rejected: the same under the reference.
        chosen_mask, rejected_mask: ``(B, Lc)``, ``(B, Lr)`` response masks.
        policy_chosen_weights, ...: the matching ``c`` from :func:`calibrated_weights`, each
            model's from its own clean and corrupted forwards.
        beta, label_smoothing: as in :func:`dpo_loss`.
        detach_weights: stop gradients through the policy's ``c`` (the reference code does not).

    Returns:
        :class:`DPOOutput`; its rewards include the ``log c`` terms, as the objective does.
    """
    return dpo_loss(
        _weighted(policy_chosen, policy_chosen_weights, chosen_mask, detach_weights),
        _weighted(policy_rejected, policy_rejected_weights, rejected_mask, detach_weights),
        _weighted(ref_chosen, ref_chosen_weights, chosen_mask, True),
        _weighted(ref_rejected, ref_rejected_weights, rejected_mask, True),
        beta=beta, label_smoothing=label_smoothing,
    )
