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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FisaoOutput", "clipped_surrogate", "fisao_loss", "kl_to_reference", "rewards_to_go"]


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
