"""Tests for vlalign.losses.povid: both POVID forms, their reductions to DPO, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from vlalign.losses.dpo import dpo_loss
from vlalign.losses.povid import POVIDOutput, povid_loss, povid_paper_loss

F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x)."""
    return math.log(1 + math.exp(x))


# Two rows. Log-ratios r = policy - ref:
#   row 0: r_w = -10 - (-11) = +1, r_t = -12 - (-11) = -1, r_n = -9 - (-10) = +1
#   row 1: r_w =  -6 - (-4)  = -2, r_t =  -7 - (-8)  = +1, r_n = -3 - (-6)  = +3
POLICY = {"policy_chosen": (-10.0, -6.0), "policy_rejected": (-12.0, -7.0), "policy_noisy": (-9.0, -3.0)}
REF = {"ref_chosen": (-11.0, -4.0), "ref_rejected": (-11.0, -8.0), "ref_noisy": (-10.0, -6.0)}


def inputs(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    out = {k: t(*v) for k, v in {**POLICY, **REF}.items()}
    if requires_grad:
        for k in POLICY:
            out[k].requires_grad_(True)
    return out


def random_inputs(seed: int, batch_size: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    names = [*POLICY, *REF]
    return {k: (-40 * torch.rand(batch_size, generator=g, dtype=F64)) for k in names}


def as_dpo_args(x: dict[str, torch.Tensor], rejected: str) -> tuple[torch.Tensor, ...]:
    return x["policy_chosen"], x[f"policy_{rejected}"], x["ref_chosen"], x[f"ref_{rejected}"]


# ---------------------------------------------------------------- code form


def test_povid_loss_hand_computed_default_weights():
    out = povid_loss(**inputs(), beta=0.1)
    # text pair: h = r_w - r_t = 2, -3; noise pair: h = r_w - r_n = 0, -5; loss = log(1 + e^(-beta h))
    text = [softplus(-0.2), softplus(0.3)]
    noise = [math.log(2.0), softplus(0.5)]
    assert isinstance(out, POVIDOutput)
    assert out.losses.shape == (2,)
    torch.testing.assert_close(out.text.losses, t(*text), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.noise.losses, t(*noise), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.losses, t(*[0.5 * a + 0.5 * b for a, b in zip(text, noise)]),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.loss, out.losses.mean())
    # metrics of each term: rewards are beta * r
    torch.testing.assert_close(out.text.chosen_rewards, t(0.1, -0.2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.text.rejected_rewards, t(-0.1, 0.1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.noise.rejected_rewards, t(0.1, 0.3), rtol=1e-12, atol=1e-12)
    assert out.text.accuracies.tolist() == [1.0, 0.0]
    assert out.noise.accuracies.tolist() == [0.0, 0.0]  # row 0 is a tie


def test_povid_loss_hand_computed_weights_and_smoothing():
    eps = 0.1
    out = povid_loss(**inputs(), beta=0.1, weights=(0.3, 0.7), label_smoothing=eps)

    def cdpo(x: float) -> float:  # x = beta * h
        return (1 - eps) * softplus(-x) + eps * softplus(x)

    expected = [0.3 * cdpo(0.2) + 0.7 * cdpo(0.0), 0.3 * cdpo(-0.3) + 0.7 * cdpo(-0.5)]
    torch.testing.assert_close(out.losses, t(*expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_povid_loss_weights_one_zero_is_dpo_exactly(eps):
    x = random_inputs(0)
    out = povid_loss(**x, weights=(1, 0), beta=0.3, label_smoothing=eps)
    plain = dpo_loss(*as_dpo_args(x, "rejected"), beta=0.3, label_smoothing=eps)
    assert torch.equal(out.losses, plain.losses)
    assert torch.equal(out.text.chosen_rewards, plain.chosen_rewards)
    assert torch.equal(out.text.rejected_rewards, plain.rejected_rewards)
    # and (0, 1) is DPO against the noise-triggered response
    out = povid_loss(**x, weights=(0, 1), beta=0.3, label_smoothing=eps)
    assert torch.equal(out.losses, dpo_loss(*as_dpo_args(x, "noisy"), beta=0.3, label_smoothing=eps).losses)


def test_povid_loss_gradients_analytic_and_finite():
    beta, w1, w2 = 0.1, 0.5, 0.5
    x = inputs(requires_grad=True)
    povid_loss(**x, beta=beta, weights=(w1, w2)).losses.sum().backward()
    # d DPO / d policy_chosen = -beta * sigmoid(-beta h) for each pair; text h = 2, -3; noise h = 0, -5
    d_text = [-beta * sigmoid(-beta * h) for h in (2.0, -3.0)]
    d_noise = [-beta * sigmoid(-beta * h) for h in (0.0, -5.0)]
    torch.testing.assert_close(x["policy_chosen"].grad, t(*[w1 * a + w2 * b for a, b in zip(d_text, d_noise)]),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x["policy_rejected"].grad, -w1 * t(*d_text), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x["policy_noisy"].grad, -w2 * t(*d_noise), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- paper form


def test_povid_paper_loss_hand_computed_defaults():
    out = povid_paper_loss(**inputs())
    # defaults alpha = beta1 = beta2 = 1, beta = 0.1: z = 0.1 * (r_w - r_t - r_n) = 0.1 * (1, -6)
    torch.testing.assert_close(out.losses, t(softplus(-0.1), softplus(0.6)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.chosen_rewards, t(0.1, -0.2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.rejected_rewards, t(0.0, 0.4), rtol=1e-12, atol=1e-12)


def test_povid_paper_loss_hand_computed_coefficients():
    out = povid_paper_loss(**inputs(), alpha=2.0, beta1=0.5, beta2=0.25, beta=1.0)
    # row 0: 2*1 - (0.5*(-1) + 0.25*1) = 2.25; row 1: 2*(-2) - (0.5*1 + 0.25*3) = -5.25
    torch.testing.assert_close(out.losses, t(softplus(-2.25), softplus(5.25)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.chosen_rewards, t(2.0, -4.0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.rejected_rewards, t(-0.25, 1.25), rtol=1e-12, atol=1e-12)


def test_povid_paper_loss_without_noise_term_is_dpo_exactly():
    x = random_inputs(1)
    out = povid_paper_loss(**x, alpha=1.0, beta1=1.0, beta2=0.0, beta=0.1)
    plain = dpo_loss(*as_dpo_args(x, "rejected"), beta=0.1)
    assert torch.equal(out.losses, plain.losses)
    assert torch.equal(out.chosen_rewards, plain.chosen_rewards)
    assert torch.equal(out.rejected_rewards, plain.rejected_rewards)


def test_povid_paper_and_code_forms_differ():
    # the two published forms are different functions (one sigmoid vs. a sum of two)
    x = inputs()
    assert not torch.allclose(povid_paper_loss(**x).losses, povid_loss(**x).losses)


def test_povid_paper_loss_gradients_analytic():
    beta, alpha, b1, b2 = 0.2, 1.5, 0.7, 0.4
    x = random_inputs(2)
    for k in POLICY:
        x[k].requires_grad_(True)
    povid_paper_loss(**x, alpha=alpha, beta1=b1, beta2=b2, beta=beta).losses.sum().backward()
    with torch.no_grad():
        r = {k: x[f"policy_{k}"] - x[f"ref_{k}"] for k in ("chosen", "rejected", "noisy")}
        z = beta * (alpha * r["chosen"] - b1 * r["rejected"] - b2 * r["noisy"])
        dl_dz = -torch.sigmoid(-z)  # d/dz of -logsigmoid(z)
    torch.testing.assert_close(x["policy_chosen"].grad, dl_dz * beta * alpha)
    torch.testing.assert_close(x["policy_rejected"].grad, -dl_dz * beta * b1)
    torch.testing.assert_close(x["policy_noisy"].grad, -dl_dz * beta * b2)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_povid_extreme_values_finite(form):
    # log-ratios of +-1e4 (beta * h up to +-2000): losses and gradients stay finite
    x = {
        "policy_chosen": torch.tensor([0.0, -1e4], requires_grad=True),
        "policy_rejected": torch.tensor([-1e4, 0.0], requires_grad=True),
        "policy_noisy": torch.tensor([-1e4, 1e4], requires_grad=True),
        "ref_chosen": torch.zeros(2),
        "ref_rejected": torch.zeros(2),
        "ref_noisy": torch.zeros(2),
    }
    out = povid_loss(**x) if form == "code" else povid_paper_loss(**x)
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all()
    for k in POLICY:
        assert torch.isfinite(x[k].grad).all()


def test_povid_rejects_bad_arguments():
    x = inputs()
    with pytest.raises(ValueError, match="weights"):
        povid_loss(**x, weights=(0.5,))
    with pytest.raises(ValueError, match="weights"):
        povid_loss(**x, weights=(-0.5, 1.5))
    with pytest.raises(ValueError, match="alpha"):
        povid_paper_loss(**x, alpha=-1.0)
    with pytest.raises(ValueError, match="beta2"):
        povid_paper_loss(**x, beta2=float("nan"))
    bad = dict(x, policy_noisy=x["policy_noisy"][:1])  # (1,) would broadcast against (2,)
    with pytest.raises(ValueError, match="same shape"):
        povid_loss(**bad)
    with pytest.raises(ValueError, match="same shape"):
        povid_paper_loss(**bad)
    with pytest.raises(ValueError, match="beta"):
        povid_paper_loss(**x, beta=0.0)
