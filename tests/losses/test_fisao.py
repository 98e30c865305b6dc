"""Tests for vlalign.losses.fisao: rewards-to-go, the clipped surrogate, the KL and the loss, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from vlalign.losses.dpo import dpo_loss, sequence_logps
from vlalign.losses.fisao import (
    clipped_surrogate,
    dpo_token_weights,
    fisao_loss,
    kl_to_reference,
    rewards_to_go,
    token_weighted_dpo_loss,
)

F64 = torch.float64


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def test_rewards_to_go_by_hand():
    rewards = t([0.0, 1.0, 0.0, -1.0], [2.0, 0.0, 0.0, 9.0])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    # row 0, gamma 0.5: G3 = -1, G2 = -0.5, G1 = 1 - 0.25 = 0.75, G0 = 0.375
    # row 1: the 9 lies off the mask and must not leak back: G1 = 0, G0 = 2
    expected = t([0.375, 0.75, -0.5, -1.0], [2.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(rewards_to_go(rewards, mask, 0.5), expected)
    torch.testing.assert_close(rewards_to_go(rewards, mask, 0.0), rewards * mask)
    torch.testing.assert_close(rewards_to_go(rewards, mask, 1.0)[0], t(0.0, 0.0, -1.0, -1.0))
    with pytest.raises(ValueError, match="gamma"):
        rewards_to_go(rewards, mask, 1.5)


def test_clipped_surrogate_by_hand():
    # ratios e^0.5 = 1.6487 (clipped to 1.2 when A > 0), e^-0.5 = 0.6065 (clipped to 0.8 when A < 0),
    # 1 (never clipped); advantages +2, -1, 3.
    logps, old = t([0.5, -0.5, 0.0]), t([0.0, 0.0, 0.0])
    adv, mask = t([2.0, -1.0, 3.0]), torch.tensor([[True, True, True]])
    loss, ratio, clipped = clipped_surrogate(logps, old, adv, mask, clip=0.2)
    # token 0: min(1.6487 * 2, 1.2 * 2) = 2.4; token 1: min(-0.6065, -0.8) = -0.8; token 2: 3
    torch.testing.assert_close(loss, t([-2.4, 0.8, -3.0]))
    torch.testing.assert_close(ratio, t([math.exp(0.5), math.exp(-0.5), 1.0]))
    assert clipped.tolist() == [[True, True, False]]
    # the other sides of the clip: A < 0 with a large ratio and A > 0 with a small one are not clipped
    loss, _, clipped = clipped_surrogate(logps, old, t([-1.0, 1.0, 0.0]), mask, clip=0.2)
    torch.testing.assert_close(loss, t([math.exp(0.5), -math.exp(-0.5), 0.0]))
    assert clipped.tolist() == [[False, False, False]]


def test_kl_estimator_by_hand():
    logps, ref = t([-1.0, -2.0, -3.0]), t([-1.0, -1.0, -4.0])
    mask = torch.tensor([[True, True, False]])
    # q = 0 -> 0; q = 1 -> e - 2; the third is off the mask
    torch.testing.assert_close(kl_to_reference(logps, ref, mask), t([0.0, math.e - 2.0, 0.0]))


def test_fisao_loss_and_gradient_by_hand():
    logps = t([-1.0, -2.0], [-0.5, 0.0]).requires_grad_()
    old = t([-1.0, -2.0], [-0.5, 0.0])  # on-policy: every ratio is 1
    ref = t([-1.0, -1.0], [-0.5, 0.0])
    adv = t([1.0, -2.0], [0.5, 7.0])
    mask = torch.tensor([[True, True], [True, False]])
    out = fisao_loss(logps, old, ref, adv, mask, clip=0.2, kl_coef=0.1)
    # surrogate = -(1 - 2 + 0.5) / 3 = 1/6; KL = (e - 2) / 3; loss = 1/6 + 0.1 (e - 2) / 3
    torch.testing.assert_close(out.policy_loss, torch.tensor(1 / 6, dtype=F64))
    torch.testing.assert_close(out.kl, torch.tensor((math.e - 2) / 3, dtype=F64))
    torch.testing.assert_close(out.loss, torch.tensor(1 / 6 + 0.1 * (math.e - 2) / 3, dtype=F64))
    assert out.clip_fraction.item() == 0.0 and out.ratio.item() == pytest.approx(1.0)
    out.loss.backward()
    # d/dlogp of -rho A / 3 at rho = 1 is -A / 3; of 0.1 (e^q - q - 1) / 3 with q = ref - logp: 0.1 (1 - e^q) / 3
    expected = t([-1 / 3, 2 / 3 + 0.1 * (1 - math.e) / 3], [-0.5 / 3, 0.0])
    torch.testing.assert_close(logps.grad, expected)


def test_fisao_loss_rejects_mismatched_shapes_and_bad_settings():
    x = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="one shape"):
        fisao_loss(x, x, x, torch.zeros(2, 2), mask)
    with pytest.raises(ValueError, match="clip"):
        fisao_loss(x, x, x, x, mask, clip=0.0)


def test_dpo_token_weights_by_hand():
    rewards = t([0.0, 1.0, -1.0, 0.5])
    torch.testing.assert_close(dpo_token_weights(rewards, True, 1.0), t([1.0, 2.0, 0.0, 1.5]))
    torch.testing.assert_close(dpo_token_weights(rewards, False, 1.0), t([1.0, 0.0, 2.0, 0.5]))
    torch.testing.assert_close(dpo_token_weights(rewards, True, 0.5), t([1.0, 1.5, 0.5, 1.25]))
    torch.testing.assert_close(dpo_token_weights(rewards, False, 3.0), t([1.0, 0.0, 4.0, 0.0]))  # clamped at 0
    torch.testing.assert_close(dpo_token_weights(rewards, True, 0.0), torch.ones_like(rewards))
    with pytest.raises(ValueError, match="alpha"):
        dpo_token_weights(rewards, True, -1.0)


def test_token_weighted_dpo_by_hand():
    # chosen log-ratios 0.2, -0.1 weighted 2, 0 -> 0.4; rejected 0.3 weighted 0.5 -> 0.15; h = 0.25
    pol_c, ref_c = t([0.0, -0.5]), t([-0.2, -0.4])
    pol_r, ref_r = t([-0.7, 5.0]), t([-1.0, 0.0])  # the 5.0 is padding
    mask_c, mask_r = torch.tensor([[True, True]]), torch.tensor([[True, False]])
    out = token_weighted_dpo_loss(pol_c, pol_r, ref_c, ref_r, mask_c, mask_r, t([2.0, 0.0]), t([0.5, 7.0]), beta=0.1)
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.025)), rel=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(0.04) and out.rejected_rewards.item() == pytest.approx(0.015)


def test_token_weighted_dpo_with_unit_weights_is_dpo_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    pol_c = torch.randn(3, 5, generator=gen, dtype=F64, requires_grad=True)
    pol_r = torch.randn(3, 4, generator=gen, dtype=F64, requires_grad=True)
    ref_c, ref_r = torch.randn(3, 5, generator=gen, dtype=F64), torch.randn(3, 4, generator=gen, dtype=F64)
    mask_c = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).bool()
    mask_r = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]]).bool()
    weighted = token_weighted_dpo_loss(pol_c, pol_r, ref_c, ref_r, mask_c, mask_r, torch.ones_like(pol_c),
                                       torch.ones_like(pol_r), beta=0.3, label_smoothing=0.1)
    plain = dpo_loss(sequence_logps(pol_c, mask_c), sequence_logps(pol_r, mask_r), sequence_logps(ref_c, mask_c),
                     sequence_logps(ref_r, mask_r), beta=0.3, label_smoothing=0.1)
    torch.testing.assert_close(weighted.losses, plain.losses)
    grads = torch.autograd.grad(weighted.loss, (pol_c, pol_r))
    for got, want in zip(grads, torch.autograd.grad(plain.loss, (pol_c, pol_r))):
        torch.testing.assert_close(got, want)
