"""One step of each method on the world's tiny model: TPO with an uncorrupted image is DPO."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from vlalign.data.pairs import load_pairs
from vlalign.logps import Scorer
from vlalign.methods import TPOConfig, collate, dpo_step
from vlalign.methods.tpo import tpo_step
from vlalign.models.load import load_vlm
from vlalign.train.config import TrainConfig
from vlalign.train.model import prepare_policy
from vlalign.train.reference import make_reference


def _setup(tiny_base: Path, tiny_prefs: Path, config: TrainConfig):
    vlm = load_vlm(tiny_base / "llava", dtype="float32", device="cpu")
    frozen = copy.deepcopy(vlm.model).eval().requires_grad_(False)
    policy = prepare_policy(vlm.model, config)
    # A policy that differs from the reference, so that the log-ratios are not all zero.
    with torch.no_grad():
        for p in policy.model.language_model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    pairs = load_pairs(tiny_prefs)
    reference = make_reference(config, policy, frozen, pairs, vlm, tiny_base / "llava", "cpu")
    rows = list(range(4))
    batch, _ = collate(pairs, vlm.processor, rows)
    return Scorer(policy), reference, batch, rows


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("one_pass", [True, False])
def test_tpo_with_the_clean_image_as_the_corrupted_one_is_dpo(tiny_base, tiny_prefs, detach, one_pass):
    """s = 0 everywhere, so every c = a + 1/2 = 1: TPO's loss and gradients must be DPO's."""
    config = TrainConfig(method="tpo", beta=0.2, sft_weight=0.5, tpo=TPOConfig(detach_weights=detach, one_pass=one_pass))
    policy, reference, batch, rows = _setup(tiny_base, tiny_prefs, config)
    tpo = tpo_step(policy, reference, batch, rows, config, batch.pixel_values.clone())
    tpo.loss.backward()
    tpo_grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    policy.zero_grad(set_to_none=True)
    dpo = dpo_step(policy, reference, batch, rows, config)
    dpo.loss.backward()
    torch.testing.assert_close(tpo.loss, dpo.loss, rtol=0, atol=1e-6)
    assert tpo.metrics["tpo/score_chosen"] == pytest.approx(0.0, abs=1e-5)
    assert tpo_grads.keys() and tpo_grads.keys() == {n for n, p in policy.named_parameters() if p.grad is not None}
    for name, grad in tpo_grads.items():
        torch.testing.assert_close(grad, dict(policy.named_parameters())[name].grad, rtol=1e-4, atol=1e-6)


def test_tpo_with_a_corrupted_image_differs_from_dpo(tiny_base, tiny_prefs):
    config = TrainConfig(method="tpo", beta=0.2)
    policy, reference, batch, rows = _setup(tiny_base, tiny_prefs, config)
    noisy = batch.pixel_values + torch.randn(batch.pixel_values.shape, generator=torch.Generator().manual_seed(0))
    tpo = tpo_step(policy, reference, batch, rows, config, noisy)
    dpo = dpo_step(policy, reference, batch, rows, config)
    # The tiny test model leans little on its image: scores are small, but they move the loss.
    assert torch.isfinite(tpo.loss) and abs(tpo.loss.item() - dpo.loss.item()) > 1e-7
    assert tpo.metrics["tpo/score_chosen"] != 0.0


@pytest.mark.parametrize("detach", [False, True])
def test_tpo_in_one_batched_pass_equals_separate_passes(tiny_base, tiny_prefs, detach):
    results = []
    for one_pass in (True, False):
        config = TrainConfig(method="tpo", beta=0.2, tpo=TPOConfig(detach_weights=detach, one_pass=one_pass))
        policy, reference, batch, rows = _setup(tiny_base, tiny_prefs, config)
        noisy = batch.pixel_values + torch.randn(batch.pixel_values.shape, generator=torch.Generator().manual_seed(0))
        out = tpo_step(policy, reference, batch, rows, config, noisy)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}))
    (one, one_grads), (two, two_grads) = results
    torch.testing.assert_close(one.loss, two.loss, rtol=1e-5, atol=1e-6)
    assert one.metrics["tpo/score_rejected"] == pytest.approx(two.metrics["tpo/score_rejected"], rel=1e-4, abs=1e-6)
    assert one_grads.keys() == two_grads.keys()
    for name, grad in one_grads.items():
        torch.testing.assert_close(grad, two_grads[name], rtol=1e-4, atol=1e-6)
