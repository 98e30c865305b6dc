"""FiSAO's token-level policy objective: PPO's clipped surrogate with a per-token KL to the reference.

Source: Cui, Zhang, Zhou, Chen, Deng, Yao and Chua, "Fine-Grained Verifiers: Preference Modeling
as Next-token Prediction in Vision-Language Alignment" (arXiv 2410.14148, ICLR 2025). Its code
was never published and its equations are not public in full; this is vlalign's reconstruction
of "token-level rewards optimised with an RL algorithm", from standard parts:

* rewards-to-go, ``G_t = sum_{u >= t} gamma^(u - t) r_u`` over a sampled answer's tokens, so
  the tokens that lead to an object word share its reward, decaying with distance;
* the advantage is ``G_t`` itself: rewards are calibrated to be 0 where the verifier cannot
  tell a correct mention from a hallucinated one (:mod:`vlalign.rewards.verifier`), which is
  the baseline; no value model is learned;
* PPO's clipped surrogate per token (Schulman et al. 2017, Eq. 7), with the ratio
  ``rho_t = pi(y_t) / pi_old(y_t)`` against the policy that sampled the answer;
* a KL penalty to the reference policy at every token, in the loss (as GRPO, Shao et al. 2024,
  Eq. 4, with its non-negative estimator ``exp(q) - q - 1``, ``q = log pi_ref - log pi``),
  rather than folded into the reward (InstructGPT): the reward then stays the verifier's alone.

Both terms are means over all response tokens of the batch, so a long answer weighs by its
length. Shapes: ``N`` sampled answers, ``T`` the padded answer length; every per-token tensor is
``(N, T)``, left-aligned, with a bool mask of the same shape.

``fisao-dpo`` (beyond the paper) replaces the RL objective with CSR's recipe (Zhou et al.,
"Calibrated Self-Rewarding Vision Language Models", arXiv 2405.14622, Sec. 3: sample answers,
rank them by reward, DPO on the best against the worst) and keeps FiSAO's token rewards as
per-token weights of DPO's log-ratios (:func:`dpo_token_weights`, :func:`token_weighted_dpo_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vlalign.losses.dpo import DPOOutput, dpo_loss, sequence_logps

__all__ = ["FisaoOutput", "clipped_surrogate", "dpo_token_weights", "fisao_loss", "kl_to_reference", "rewards_to_go",
           "token_weighted_dpo_loss"]


def rewards_to_go(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """``G_t = r_t + gamma * G_{t+1}`` within each row's mask. ``(N, T) -> (N, T)``, 0 off the mask."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    rewards = rewards * mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out * mask


def clipped_surrogate(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor,
                      clip: float) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's ``-min(rho A, clip(rho, 1 - eps, 1 + eps) A)`` per token.

    Returns the per-token loss ``(N, T)`` (0 off the mask), the ratio ``rho`` ``(N, T)`` and
    whether the clip was active ``(N, T)`` bool. ``old_logps`` and ``advantages`` carry no gradient.
    """
    ratio = torch.exp(logps - old_logps.detach())
    advantages = advantages.detach()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages
    loss = -torch.minimum(unclipped, clipped) * mask
    return loss, ratio, (clipped < unclipped) & mask.bool()


def kl_to_reference(logps: Tensor, ref_logps: Tensor, mask: Tensor) -> Tensor:
    """``exp(q) - q - 1`` with ``q = log pi_ref - log pi`` per token: >= 0, 0 where they agree. ``(N, T)``."""
    q = ref_logps.detach() - logps
    return (torch.exp(q) - q - 1.0) * mask


@dataclass
class FisaoOutput:
    loss: Tensor  # scalar, differentiable
    policy_loss: Tensor  # scalar, the clipped surrogate's token mean
    kl: Tensor  # scalar, the KL estimate's token mean
    clip_fraction: Tensor  # scalar, share of tokens where the clip was active
    ratio: Tensor  # scalar, mean rho over tokens


def fisao_loss(logps: Tensor, old_logps: Tensor, ref_logps: Tensor, advantages: Tensor, mask: Tensor,
               clip: float = 0.2, kl_coef: float = 0.05) -> FisaoOutput:
    """Token mean of the clipped surrogate plus ``kl_coef`` times the token mean of the KL.

    Args:
        logps: (N, T) the policy's log-probs of the sampled tokens, with gradients.
        old_logps: (N, T) the same under the policy that sampled them.
        ref_logps: (N, T) the same under the reference policy.
        advantages: (N, T) per-token advantages (:func:`rewards_to_go` of the token rewards).
        mask: (N, T) bool, the answer's tokens (eos included).
    """
    if not logps.shape == old_logps.shape == ref_logps.shape == advantages.shape == mask.shape:
        raise ValueError("logps, old_logps, ref_logps, advantages and mask must have one shape, got "
                         f"{[tuple(t.shape) for t in (logps, old_logps, ref_logps, advantages, mask)]}")
    if clip <= 0 or kl_coef < 0:
        raise ValueError(f"clip must be > 0 and kl_coef >= 0, got {clip} and {kl_coef}")
    tokens = mask.sum().clamp(min=1)
    surrogate, ratio, clipped = clipped_surrogate(logps, old_logps, advantages, mask, clip)
    policy_loss = surrogate.sum() / tokens
    kl = kl_to_reference(logps, ref_logps, mask).sum() / tokens
    return FisaoOutput(policy_loss + kl_coef * kl, policy_loss, kl, clipped.sum() / tokens,
                       (ratio * mask).sum() / tokens)


def dpo_token_weights(mention_rewards: Tensor, chosen: bool, alpha: float) -> Tensor:
    """fisao-dpo's weight of each token: ``max(0, 1 + alpha * r)`` in a chosen answer, ``max(0, 1 - alpha * r)``
    in a rejected one, ``r`` the reward of the mention the token belongs to (0 off the mentions).

    So a chosen answer's grounded objects are pulled up harder and its hallucinated ones less
    (not at all with ``alpha = 1`` and ``r = -1``), and a rejected answer's hallucinations are
    pushed down harder and its correct objects less; every other token weighs 1, and
    ``alpha = 0`` is plain DPO. ``(N, T) -> (N, T)``.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    sign = 1.0 if chosen else -1.0
    return (1.0 + sign * alpha * mention_rewards).clamp(min=0.0)


def token_weighted_dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
                            chosen_mask: Tensor, rejected_mask: Tensor, chosen_weights: Tensor,
                            rejected_weights: Tensor, *, beta: float = 0.1, label_smoothing: float = 0.0) -> DPOOutput:
    """DPO (Rafailov et al. 2023, Eq. 7) with each answer's log-ratio a weighted sum over its tokens::

        h = sum_t w_t^w (log pi - log ref)(y_w,t) - sum_t w_t^l (log pi - log ref)(y_l,t)

    Args:
        policy_chosen, ref_chosen, chosen_mask, chosen_weights: ``(B, Lw)`` per-token log-probs
            of the chosen answers under the policy and the reference, the response mask, the
            weights (:func:`dpo_token_weights`).
        policy_rejected, ref_rejected, rejected_mask, rejected_weights: the same, ``(B, Ll)``.

    With every weight 1 it is :func:`vlalign.losses.dpo.dpo_loss` of the sequence log-probs.
    """
    chosen = (chosen_weights * (policy_chosen - ref_chosen.detach()), chosen_mask)
    rejected = (rejected_weights * (policy_rejected - ref_rejected.detach()), rejected_mask)
    # The weighted log-ratios go in as the policy's sequence values and the reference's as 0:
    # dpo_loss takes their difference, so the loss and its rewards are those of h above.
    zeros = torch.zeros(policy_chosen.shape[0], device=policy_chosen.device)
    return dpo_loss(sequence_logps(*chosen), sequence_logps(*rejected), zeros, zeros, beta=beta,
                    label_smoothing=label_smoothing)
