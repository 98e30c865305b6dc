"""Tests for vlalign.losses.tpo: Eq. 5 by hand, the loss and its gradient by hand, TPO == DPO at c = 1."""

from __future__ import annotations

import math

import pytest
import torch

from vlalign.losses.dpo import dpo_loss, sequence_logps
from vlalign.losses.tpo import calibrated_weights, tpo_loss

F64 = torch.float64


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def test_calibrated_weights_by_hand():
    s = t(0.0, math.log(3.0), -math.log(3.0))  # sigmoid: 1/2, 3/4, 1/4
    torch.testing.assert_close(calibrated_weights(s, chosen=True), t(1.0, 1.25, 0.75))
    torch.testing.assert_close(calibrated_weights(s, chosen=False), t(1.0, 0.75, 1.25))
    torch.testing.assert_close(calibrated_weights(s, chosen=True, a=0.0), t(0.5, 0.75, 0.25))
    with pytest.raises(ValueError, match="a must be"):
        calibrated_weights(s, chosen=True, a=-0.1)


# One pair, beta = 0.1. Chosen: two tokens, log-probs -1 and -2, scores 0 and ln 3, so c = 1 and
# 1.25. Rejected: one token, log-prob -3, score 0 (c = 1), then padding (score 5, never read).
# Reference: chosen -1.5 and -2, rejected -2.5, every c = 1.
#   policy chosen   = -1 - 2 + ln 1.25      ref chosen   = -3.5   ratio = 0.5 + ln 1.25
#   policy rejected = -3                    ref rejected = -2.5   ratio = -0.5
#   h = 1 + ln 1.25 = 1.2231436;  loss = -log sigmoid(0.1 h) = log(1 + exp(-0.12231436)) = 0.6338589
H = 1.0 + math.log(1.25)
LOSS = math.log1p(math.exp(-0.1 * H))


def example(requires_grad: bool = False):
    scores_chosen, scores_rejected = t([0.0, math.log(3.0)]), t([0.0, 5.0])
    policy_chosen = t([-1.0, -2.0]).requires_grad_(requires_grad)
    policy_rejected = t([-3.0, 0.0]).requires_grad_(requires_grad)
    weights_chosen = calibrated_weights(scores_chosen, chosen=True).requires_grad_(requires_grad)
    weights_rejected = calibrated_weights(scores_rejected, chosen=False).requires_grad_(requires_grad)
    masks = (torch.tensor([[True, True]]), torch.tensor([[True, False]]))
    ref = (t([-1.5, -2.0]), t([-2.5, 0.0]), torch.ones(1, 2, dtype=F64), torch.zeros(1, 2, dtype=F64))
    ref[3][0, 0] = 1.0  # the rejected padding's weight is 0: it must not turn into log 0
    return policy_chosen, policy_rejected, weights_chosen, weights_rejected, masks, ref


def call(policy_chosen, policy_rejected, weights_chosen, weights_rejected, masks, ref, **kwargs):
    return tpo_loss(policy_chosen, policy_rejected, ref[0], ref[1], *masks, weights_chosen, weights_rejected,
                    ref[2], ref[3], beta=0.1, **kwargs)


def test_tpo_loss_and_gradient_by_hand():
    pc, pr, wc, wr, masks, ref = example(requires_grad=True)
    out = call(pc, pr, wc, wr, masks, ref)
    assert out.loss.item() == pytest.approx(LOSS, abs=1e-12)
    assert LOSS == pytest.approx(0.6338589, abs=1e-7)
    assert out.margins.item() == pytest.approx(0.1 * H, abs=1e-12)
    out.loss.backward()
    g = -0.1 / (1.0 + math.exp(0.1 * H))  # d loss / d (policy chosen sequence log-prob) = -beta sigmoid(-beta h)
    torch.testing.assert_close(pc.grad, t([g, g]))
    torch.testing.assert_close(pr.grad, t([-g, 0.0]))
    # Through log c: d loss / d c_t = (d loss / d sequence) / c_t, and nothing at padding.
    torch.testing.assert_close(wc.grad, t([g / 1.0, g / 1.25]))
    torch.testing.assert_close(wr.grad, t([-g / 1.0, 0.0]))


def test_detach_weights_stops_only_the_gradient_through_c():
    pc, pr, wc, wr, masks, ref = example(requires_grad=True)
    out = call(pc, pr, wc, wr, masks, ref, detach_weights=True)
    assert out.loss.item() == pytest.approx(LOSS, abs=1e-12)
    out.loss.backward()
    assert wc.grad is None and wr.grad is None
    g = -0.1 / (1.0 + math.exp(0.1 * H))
    torch.testing.assert_close(pc.grad, t([g, g]))


def test_unit_weights_give_dpo_exactly_loss_and_gradient():
    gen = torch.Generator().manual_seed(0)
    shape_c, shape_r = (4, 7), (4, 5)
    logps = [-torch.rand(s, generator=gen, dtype=F64) * 3 for s in (shape_c, shape_r, shape_c, shape_r)]
    masks = (torch.rand(shape_c, generator=gen) < 0.8, torch.rand(shape_r, generator=gen) < 0.8)
    pc, pr = (x.clone().requires_grad_(True) for x in logps[:2])
    ones_c, ones_r = torch.ones(shape_c, dtype=F64), torch.ones(shape_r, dtype=F64)
    tpo = tpo_loss(pc, pr, logps[2], logps[3], *masks, ones_c, ones_r, ones_c, ones_r, beta=0.3, label_smoothing=0.1)
    tpo.loss.backward()
    tpo_grads = pc.grad.clone(), pr.grad.clone()
    pc.grad = pr.grad = None
    dpo = dpo_loss(sequence_logps(pc, masks[0]), sequence_logps(pr, masks[1]), sequence_logps(logps[2], masks[0]),
                   sequence_logps(logps[3], masks[1]), beta=0.3, label_smoothing=0.1)
    dpo.loss.backward()
    assert torch.equal(tpo.losses, dpo.losses)
    assert torch.equal(tpo_grads[0], pc.grad) and torch.equal(tpo_grads[1], pr.grad)


def test_weights_must_match_the_log_probs():
    pc, pr, wc, wr, masks, ref = example()
    with pytest.raises(ValueError, match="weights shape"):
        call(pc, pr, wc[:, :1], wr, masks, ref)
