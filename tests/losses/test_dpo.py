"""Tests for vlalign.losses.dpo: hand-computed values, analytic gradients, stability, TRL parity."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from vlalign.losses.dpo import DPOOutput, dpo_loss, sequence_logps, sft_loss

F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# A 3-row batch, beta = 0.1:
#   row 0: chosen ratio -10 - (-11) = +1, rejected ratio -12 - (-11) = -1  -> h = +2
#   row 1: every log-prob -5                                                -> h =  0
#   row 2: chosen ratio -20 - (-18) = -2, rejected ratio -8 - (-9) = +1     -> h = -3
POLICY_CHOSEN = (-10.0, -5.0, -20.0)
POLICY_REJECTED = (-12.0, -5.0, -8.0)
REF_CHOSEN = (-11.0, -5.0, -18.0)
REF_REJECTED = (-11.0, -5.0, -9.0)
H = (2.0, 0.0, -3.0)


def batch(requires_grad: bool = False) -> tuple[torch.Tensor, ...]:
    tensors = (t(*POLICY_CHOSEN), t(*POLICY_REJECTED), t(*REF_CHOSEN), t(*REF_REJECTED))
    if requires_grad:
        tensors[0].requires_grad_(True)
        tensors[1].requires_grad_(True)
    return tensors


def test_dpo_hand_computed_values():
    out = dpo_loss(*batch(), beta=0.1)
    # -log sigmoid(x) = log(1 + exp(-x)) with x = beta * h = 0.2, 0, -0.3
    expected = [math.log(1 + math.exp(-0.2)), math.log(2.0), math.log(1 + math.exp(0.3))]
    assert out.losses.shape == (3,)
    torch.testing.assert_close(out.losses, t(*expected), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.loss, t(*expected).mean(), rtol=1e-12, atol=1e-12)


def test_dpo_rewards_margins_accuracies():
    out = dpo_loss(*batch(requires_grad=True), beta=0.1)
    torch.testing.assert_close(out.chosen_rewards, t(0.1, 0.0, -0.2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.rejected_rewards, t(-0.1, 0.0, 0.1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.margins, t(0.2, 0.0, -0.3), rtol=1e-12, atol=1e-12)
    # a tie (row 1) is not a win
    assert out.accuracies.tolist() == [1.0, 0.0, 0.0]
    assert out.accuracies.dtype == torch.float32  # as TRL logs it, whatever the input dtype
    assert not out.chosen_rewards.requires_grad
    assert not out.rejected_rewards.requires_grad
    assert not out.margins.requires_grad
    assert out.losses.requires_grad


def test_dpo_label_smoothing_hand_computed():
    eps = 0.1
    out = dpo_loss(*batch(), beta=0.1, label_smoothing=eps)
    # -(1-eps) log sigmoid(x) - eps log sigmoid(-x) = (1-eps) log(1+e^-x) + eps log(1+e^x)
    expected = [(1 - eps) * math.log(1 + math.exp(-x)) + eps * math.log(1 + math.exp(x)) for x in (0.2, 0.0, -0.3)]
    torch.testing.assert_close(out.losses, t(*expected), rtol=1e-12, atol=1e-12)
    # at h = 0 smoothing changes nothing: both terms are log 2
    assert out.losses[1].item() == pytest.approx(math.log(2.0), rel=1e-12)
    # rewards do not depend on smoothing
    plain = dpo_loss(*batch(), beta=0.1)
    assert torch.equal(out.chosen_rewards, plain.chosen_rewards)
    assert torch.equal(out.rejected_rewards, plain.rejected_rewards)


def test_dpo_zero_smoothing_is_plain_sigmoid_exactly():
    a = dpo_loss(*batch(), beta=0.1, label_smoothing=0.0)
    assert torch.equal(a.losses, -torch.nn.functional.logsigmoid(0.1 * t(*H)))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_dpo_gradient_matches_analytic_hand_computed(eps):
    beta = 0.1
    pc, pr, rc, rr = batch(requires_grad=True)
    dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps).losses.sum().backward()
    # dL/dh = beta * (-(1-eps) * sigmoid(-beta h) + eps * sigmoid(beta h)); h rises with pc, falls with pr
    dl_dh = [beta * (-(1 - eps) * sigmoid(-beta * h) + eps * sigmoid(beta * h)) for h in H]
    torch.testing.assert_close(pc.grad, t(*dl_dh), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pr.grad, -t(*dl_dh), rtol=1e-12, atol=1e-12)
    if eps == 0.0:
        # the classic form: d loss / d policy_chosen = -beta * sigmoid(-beta h)
        expected = [-beta * sigmoid(-beta * h) for h in H]
        torch.testing.assert_close(pc.grad, t(*expected), rtol=1e-12, atol=1e-12)


def test_dpo_gradient_random_batch_and_reference_side():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-30 * torch.rand(5, generator=g, dtype=F64) for _ in range(4))
    for x in (pc, pr, rc, rr):
        x.requires_grad_(True)
    beta, eps = 0.25, 0.2
    dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps).losses.sum().backward()
    with torch.no_grad():
        z = beta * ((pc - rc) - (pr - rr))
        dl_dh = beta * (-(1 - eps) * torch.sigmoid(-z) + eps * torch.sigmoid(z))
    torch.testing.assert_close(pc.grad, dl_dh)
    torch.testing.assert_close(pr.grad, -dl_dh)
    torch.testing.assert_close(rc.grad, -dl_dh)
    torch.testing.assert_close(rr.grad, dl_dh)
    assert torch.autograd.gradcheck(
        lambda a, b: dpo_loss(a, b, rc.detach(), rr.detach(), beta=beta, label_smoothing=eps).losses,
        (pc.detach().clone().requires_grad_(True), pr.detach().clone().requires_grad_(True)),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, F64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_dpo_extreme_margins_stay_finite(dtype, eps):
    beta = 0.1
    # h = +1e4 and -1e4 (beta*h = +-1000: exp overflows in every dtype, logsigmoid does not)
    pc = torch.tensor([0.0, -1e4], dtype=dtype, requires_grad=True)
    pr = torch.tensor([-1e4, 0.0], dtype=dtype, requires_grad=True)
    zero = torch.zeros(2, dtype=dtype)
    out = dpo_loss(pc, pr, zero, zero, beta=beta, label_smoothing=eps)
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all()
    assert torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()
    # h = +1e4: -(1-eps) * 0 - eps * (-1000); h = -1e4: (1-eps) * 1000 - eps * 0
    expected = torch.tensor([eps * 1000.0, (1 - eps) * 1000.0], dtype=F64)
    torch.testing.assert_close(out.losses.double(), expected, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=1e-6)
    # gradients saturate at beta*eps and -beta*(1-eps)
    grad_expected = torch.tensor([beta * eps, -beta * (1 - eps)], dtype=F64)
    torch.testing.assert_close(pc.grad.double(), grad_expected, rtol=1e-2, atol=1e-6)
    assert out.accuracies.tolist() == [1.0, 0.0]


def test_dpo_rejects_bad_arguments():
    pc, pr, rc, rr = batch()
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(pc, pr[:2], rc, rr)
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(pc[None], pr[None], rc[None], rr[None])  # (1, B) is not (B,)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=-0.1)


def test_dpo_output_is_frozen_dataclass():
    out = dpo_loss(*batch())
    assert isinstance(out, DPOOutput)
    with pytest.raises(AttributeError):
        out.losses = out.losses  # type: ignore[misc]


# ---------------------------------------------------------------- sequence_logps and sft_loss

TOKENS = torch.tensor(
    [
        [-1.0, -2.0, -3.0, -99.0],  # 3 response tokens, then padding holding junk
        [-0.5, float("-inf"), -7.0, -7.0],  # 1 response token; -inf in padding must not leak
        [-4.0, -4.0, -4.0, -4.0],  # no response token at all
    ],
    dtype=F64,
)
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize("mask", [MASK, MASK.to(torch.float32), MASK.to(torch.long)])
def test_sequence_logps_sums_masked_tokens(mask):
    out = sequence_logps(TOKENS, mask)
    assert out.shape == (3,)
    assert out.tolist() == [-6.0, -0.5, 0.0]


def test_sequence_logps_gradient_only_on_response_tokens():
    x = TOKENS.clone().requires_grad_(True)
    sequence_logps(x, MASK).sum().backward()
    assert torch.equal(x.grad, MASK.to(F64))


def test_sequence_logps_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mask shape"):
        sequence_logps(TOKENS, MASK[:, :3])
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        sequence_logps(TOKENS[0], MASK[0])


def test_sft_loss_mean_nll_per_token():
    out = sft_loss(TOKENS, MASK)
    # (1 + 2 + 3) / 3 = 2; 0.5 / 1; an empty row gives 0
    assert out.shape == (3,)
    assert out.tolist() == [2.0, 0.5, 0.0]
    x = TOKENS.clone().requires_grad_(True)
    sft_loss(x, MASK).sum().backward()
    expected = torch.tensor([[-1 / 3] * 3 + [0.0], [-1.0, 0, 0, 0], [0.0] * 4], dtype=F64)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)


def test_dpo_on_sequence_logps_pipeline():
    # chosen and rejected share a mask; ref equals policy -> h = 0, loss = log 2 everywhere
    seq = sequence_logps(TOKENS, MASK)
    out = dpo_loss(seq, seq, seq, seq, beta=0.5)
    torch.testing.assert_close(out.losses, torch.full((3,), math.log(2.0), dtype=F64))


# ---------------------------------------------------------------- parity with TRL's DPOTrainer
#
# In TRL >= 0.29 the DPO loss is not a separate method: it is computed inline in
# `DPOTrainer._compute_loss(self, model, inputs, return_outputs)`, from the model's per-token
# log-probs (returned by TRL's fused LM head) and, with `precompute_ref_log_probs`, the reference
# sequence log-probs taken from `inputs`. We call that unbound method with a stand-in `self`
# holding only the attributes it reads and a stand-in model that plays the fused LM head:
# it returns the given per-token log-probs, zeroed where the shifted label is -100, as the real
# head does. Everything from the masked sum to the loss and the logged reward metrics is TRL's.


class _FusedHeadStandIn:
    """Plays `model(..., labels=labels, fused_lm_head=True)` for given per-token log-probs."""

    training = True

    def __init__(self, token_logps: torch.Tensor):
        self.token_logps = token_logps  # (2B, L) for labels[:, 1:]

    def __call__(self, *, labels, fused_lm_head, **_):
        assert fused_lm_head
        keep = labels[:, 1:] != -100
        zeros = torch.zeros_like(self.token_logps)
        return SimpleNamespace(
            log_probs=torch.where(keep, self.token_logps, zeros),
            entropy=zeros.detach(),
            mean_logits=zeros.detach(),
            is_top1=torch.zeros_like(keep),
        )


@pytest.fixture(scope="module")
def trl_compute_loss():
    pytest.importorskip("trl", minversion="1.16")
    from trl.trainer.dpo_trainer import DPOTrainer

    return DPOTrainer._compute_loss


def _trl_loss(compute_loss, *, chosen_tok, rejected_tok, chosen_mask, rejected_mask, ref_chosen, ref_rejected,
              beta, loss_type="sigmoid", label_smoothing=0.0):
    """Run TRL's `_compute_loss` on a [chosen; rejected] batch; return (loss, leaf, metrics)."""
    leaf = torch.cat([chosen_tok, rejected_tok]).detach().requires_grad_(True)
    resp_mask = torch.cat([chosen_mask, rejected_mask]).long()
    n = resp_mask.shape[0]
    # one prompt token in column 0, then the response; TRL shifts by one
    completion_mask = torch.cat([torch.zeros(n, 1, dtype=torch.long), resp_mask], dim=1)
    model = _FusedHeadStandIn(leaf)
    stand_in = SimpleNamespace(
        model=model,
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        args=SimpleNamespace(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros_like(completion_mask),
        "attention_mask": torch.ones_like(completion_mask),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    loss = compute_loss(stand_in, model, inputs, return_outputs=False)
    return loss, leaf, stand_in._metrics["train"]


def _random_pairs(seed: int, batch_size: int = 6, length: int = 7):
    g = torch.Generator().manual_seed(seed)
    chosen_tok = -5 * torch.rand(batch_size, length, generator=g, dtype=F64)
    rejected_tok = -5 * torch.rand(batch_size, length, generator=g, dtype=F64)
    lengths_c = torch.randint(1, length + 1, (batch_size,), generator=g)
    lengths_r = torch.randint(1, length + 1, (batch_size,), generator=g)
    cols = torch.arange(length)
    chosen_mask = cols[None] < lengths_c[:, None]
    rejected_mask = cols[None] < lengths_r[:, None]
    # junk in the padding, which both sides must ignore
    chosen_tok = torch.where(chosen_mask, chosen_tok, torch.full_like(chosen_tok, -123.0))
    rejected_tok = torch.where(rejected_mask, rejected_tok, torch.full_like(rejected_tok, -123.0))
    ref_chosen = -20 * torch.rand(batch_size, generator=g, dtype=F64)
    ref_rejected = -20 * torch.rand(batch_size, generator=g, dtype=F64)
    return {
        "chosen_tok": chosen_tok, "rejected_tok": rejected_tok, "chosen_mask": chosen_mask,
        "rejected_mask": rejected_mask, "ref_chosen": ref_chosen, "ref_rejected": ref_rejected,
    }


def _ours(data, *, beta, label_smoothing=0.0):
    chosen_tok = data["chosen_tok"].clone().requires_grad_(True)
    rejected_tok = data["rejected_tok"].clone().requires_grad_(True)
    out = dpo_loss(sequence_logps(chosen_tok, data["chosen_mask"]), sequence_logps(rejected_tok, data["rejected_mask"]),
                   data["ref_chosen"], data["ref_rejected"], beta=beta, label_smoothing=label_smoothing)
    out.loss.backward()
    return out, torch.cat([chosen_tok.grad, rejected_tok.grad])


@pytest.mark.parametrize("seed,beta", [(0, 0.1), (1, 0.5), (2, 2.0)])
def test_trl_parity_sigmoid(trl_compute_loss, seed, beta):
    data = _random_pairs(seed)
    loss, leaf, metrics = _trl_loss(trl_compute_loss, beta=beta, **data)
    loss.backward()
    ours, our_grad = _ours(data, beta=beta)
    torch.testing.assert_close(ours.loss, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(our_grad, leaf.grad, rtol=1e-12, atol=1e-12)
    for key, value in (("rewards/chosen", ours.chosen_rewards), ("rewards/rejected", ours.rejected_rewards),
                       ("rewards/margins", ours.margins), ("rewards/accuracies", ours.accuracies)):
        assert metrics[key] == [pytest.approx(value.mean().item(), rel=1e-12, abs=1e-12)], key
    assert 0.0 < metrics["rewards/accuracies"][0] < 1.0  # the random batch has both wins and losses


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_trl_parity_label_smoothing(trl_compute_loss, eps):
    """cDPO against TRL, which (v1.16) no longer smooths its `sigmoid` loss.

    TRL's `aot` loss is ``-(1-eps) logsigmoid(beta*d) - eps logsigmoid(-beta*d)`` where d is the
    difference of batch-*sorted* log-ratio differences; with one pair per batch the sort is the
    identity and d = h, so it is exactly cDPO. Compare per example, loss and gradient.
    """
    beta = 0.1
    data = _random_pairs(3, batch_size=4)
    ours, our_grad = _ours(data, beta=beta, label_smoothing=eps)
    for i in range(4):
        row = {k: v[i : i + 1] for k, v in data.items()}
        loss, leaf, _ = _trl_loss(trl_compute_loss, beta=beta, loss_type="aot", label_smoothing=eps, **row)
        loss.backward()
        torch.testing.assert_close(ours.losses[i], loss, rtol=1e-12, atol=1e-12)
        # ours was averaged over 4 rows, TRL's over one
        torch.testing.assert_close(our_grad[[i, 4 + i]] * 4, leaf.grad, rtol=1e-12, atol=1e-12)


def test_trl_parity_label_smoothing_from_sigmoid(trl_compute_loss):
    """cDPO = (1-eps) * TRL sigmoid(chosen, rejected) + eps * TRL sigmoid(rejected, chosen), on batch means."""
    beta, eps = 0.1, 0.2
    data = _random_pairs(4)
    swap = {"chosen_tok": "rejected_tok", "chosen_mask": "rejected_mask", "ref_chosen": "ref_rejected"}
    swap.update({v: k for k, v in swap.items()})
    swapped = {k: data[swap[k]] for k in data}
    forward, _, _ = _trl_loss(trl_compute_loss, beta=beta, **data)
    flipped, _, _ = _trl_loss(trl_compute_loss, beta=beta, **swapped)
    ours, _ = _ours(data, beta=beta, label_smoothing=eps)
    torch.testing.assert_close(ours.loss, ((1 - eps) * forward + eps * flipped).detach(), rtol=1e-12, atol=1e-12)
