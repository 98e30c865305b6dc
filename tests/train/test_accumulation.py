"""Batch 2B x accumulation 1 and batch B x accumulation 2 give the same weights, for every method.

That holds because every random draw is tied to a record and a step (the corruption noise), or to a
round (FiSAO's samples), never to a micro-batch's position, and because each method's loss is
normalised over the whole step (pairs, or FiSAO's tokens).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from vlalign.methods import FisaoSettings
from vlalign.models.load import load_vlm
from vlalign.rewards.verifier import Calibration
from vlalign.train.config import TrainConfig
from vlalign.train.loop import train


@pytest.fixture
def fixed_calibration(monkeypatch):
    """The tiny world's 3-step CLIP separates nothing: give the rewards a fixed, known calibration."""
    import vlalign.methods.fisao as fisao

    monkeypatch.setattr(fisao, "calibrate_rewards", lambda vlm, verifier, data, config, processes=None: (
        Calibration(0.2, -0.2, 5, 5, 0.75, config.fisao.patch_level), {"split": data.split}))


def final_weights(out) -> dict[str, torch.Tensor]:
    steps = sorted((out / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    return load_file(str(steps[-1] / "trainable.safetensors"))


def run(tmp_path, tiny_base, data, method: str, batch_size: int, grad_accum: int, verifier=None):
    # kl_coef 0: at the start the KL term's gradient is rounding noise around zero (the policy is the
    # reference), which Adam scales up to full-size steps that differ with the batch's composition.
    fisao = FisaoSettings(rounds=1, prompts_per_round=2, samples=4, epochs=2, max_new_tokens=10,
                          calibration_images=4, kl_coef=0.0, verifier=verifier or "")
    out = tmp_path / f"{method}-{batch_size}x{grad_accum}"
    config = TrainConfig(model=tiny_base / "llava", data=data, out=out, method=method, batch_size=batch_size,
                         grad_accum=grad_accum, lr=1e-3, warmup_ratio=0.0, max_steps=0 if verifier else 2, fisao=fisao,
                         sft_weight=0.5)
    train(config)
    return final_weights(out)


@pytest.mark.parametrize("method", ["dpo", "povid", "tpo", "fisao", "fisao-dpo"])
def test_batch_and_accumulation_can_be_recut(tmp_path, tiny_world, tiny_base, tiny_prefs, fixed_calibration, method):
    on_policy = method.startswith("fisao")
    inputs = tiny_base / "clip" if on_policy else None
    data = tiny_world if on_policy else tiny_prefs
    start = load_vlm(tiny_base / "llava", dtype="float32").model.state_dict()
    whole = run(tmp_path, tiny_base, data, method, 4, 1, inputs)
    cut = run(tmp_path, tiny_base, data, method, 2, 2, inputs)
    assert whole.keys() == cut.keys() and whole
    moved = max((whole[k] - start[k]).abs().max().item() for k in whole if k in start)
    assert moved > 1e-4  # the runs trained, so agreeing is not trivial
    for name in whole:
        torch.testing.assert_close(cut[name], whole[name], rtol=1e-5, atol=2e-6)
