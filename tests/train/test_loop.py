"""The training loop: resume equals an uninterrupted run, NaN stops cleanly, references agree."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from vlalign.errors import UserError
from vlalign.models.load import load_vlm
from vlalign.seeding import micro_batch_rows
from vlalign.train.config import LoraSettings, TrainConfig
from vlalign.train.loop import TrainingDiverged, train
from vlalign.train.model import prepare_policy, weights_dtype


@pytest.fixture(scope="module")
def prefs(tiny_world, tmp_path_factory):
    from vlalign.generate.inject import InjectConfig, run_inject

    out = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    run_inject(tiny_world, out, InjectConfig(limit=40))
    return out


def _config(model="", data="", out="", **overrides) -> TrainConfig:
    fields = {"model": model, "data": data, "out": out, "max_steps": 4, "batch_size": 4, "lr": 1e-3,
              "warmup_ratio": 0.0, "save_every": 2}
    fields.update(overrides)
    return TrainConfig(**fields)


def _final_weights(out):
    steps = sorted((out / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    return load_file(str(steps[-1] / "trainable.safetensors"))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("method", ["dpo", "povid", "tpo"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_base, prefs, method):
    model = tiny_base / "llava"
    train(_config(model, prefs, tmp_path / "whole", method=method))

    def stop_after_three(step, total, metrics):
        if step == 3:  # the checkpoint of step 2 exists; step 3's update is lost with the "kill"
            raise _Stop

    with pytest.raises(_Stop):
        train(_config(model, prefs, tmp_path / "cut", method=method), on_step=stop_after_three)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step-2"]
    summary = train(_config(model, prefs, tmp_path / "cut", method=method), resume=True)
    assert summary["steps"] == 4
    logged = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]  # step 3 of the killed run is dropped and redone, not logged twice
    whole, cut = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "cut")
    assert whole.keys() == cut.keys() and len(whole) > 0
    for name in whole:
        torch.testing.assert_close(cut[name], whole[name], rtol=1e-5, atol=1e-6)
    start = dict(load_vlm(model, dtype="float32", device="cpu").model.named_parameters())
    moved = [n for n in whole if not torch.equal(whole[n], start[n].detach())]
    assert moved, "training changed nothing"


def test_metrics_log_and_outputs(tmp_path, tiny_base, prefs):
    out = tmp_path / "run"
    train(_config(tiny_base / "llava", prefs, out, eval_data=prefs))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert rows[-1]["step"] == 4 and "eval/loss" in rows[-1]
    for key in ("rewards/margin", "rewards/accuracy", "grad_norm", "lr", "tokens_per_s"):
        assert key in rows[0]
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the first step
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"] == "dpo" and saved["model"] == str(tiny_base / "llava") and saved["out"] == str(out)
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(out / "model")


def test_precomputed_reference_gives_the_live_reference_loss(tmp_path, tiny_base, prefs, monkeypatch):
    monkeypatch.setenv("VLALIGN_CACHE", str(tmp_path / "cache"))
    held_out = prefs.with_name("held_out.jsonl")  # other records than the first ones: another table
    held_out.write_text("".join(prefs.read_text().splitlines(keepends=True)[30:38]))
    train(_config(tiny_base / "llava", prefs, tmp_path / "live", reference="copy", eval_data=held_out))
    train(_config(tiny_base / "llava", prefs, tmp_path / "pre", reference="precomputed", eval_data=held_out))
    assert any((tmp_path / "cache" / "reference").glob("*.safetensors"))
    live = [json.loads(x) for x in (tmp_path / "live" / "metrics.jsonl").read_text().splitlines()]
    pre = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert "eval/loss" in live[-1] and "eval/loss" in pre[-1]  # held-out pairs get their own table
    for a, b in zip(live, pre, strict=True):
        for key in ("loss", "rewards/margin", "eval/loss", "eval/rewards/margin"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_nan_loss_stops_with_the_step_and_records_and_names_no_bad_state(tmp_path, tiny_base, prefs):
    # step 1's update (lr 1e30) made the weights that give the NaN: no checkpoint of them is kept or named
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 2 \(records .+\); no checkpoint precedes it"):
        train(_config(tiny_base / "llava", prefs, tmp_path / "run", lr=1e30, max_steps=20, save_every=0))
    assert not list((tmp_path / "run").glob("checkpoints/step-*"))


def test_lora_run_saves_an_adapter_and_uses_the_adapter_free_reference(tmp_path, tiny_base, prefs):
    out = tmp_path / "lora"
    train(_config(tiny_base / "llava", prefs, out, save_every=0, lora=LoraSettings(enabled=True, r=4, alpha=8)))
    assert (out / "model" / "adapter_config.json").is_file()
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(0.6931, abs=1e-4)  # LoRA starts at zero: policy == reference


def test_lora_under_bf16_keeps_frozen_weights_bf16_and_trains_fp32_adapters(tmp_path, tiny_base, prefs):
    config = _config(mixed_precision="bf16", lora=LoraSettings(enabled=True, r=4, alpha=8))
    assert weights_dtype(config) == torch.bfloat16
    assert weights_dtype(_config(mixed_precision="bf16")) == torch.float32  # full fine-tuning: fp32 master weights
    policy = prepare_policy(load_vlm(tiny_base / "llava", dtype=weights_dtype(config)).model, config)
    trainable = {n: p.dtype for n, p in policy.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("multi_modal_projector" in n for n in trainable)
    assert set(trainable.values()) == {torch.float32}
    assert {p.dtype for p in policy.parameters() if not p.requires_grad} == {torch.bfloat16}

    # The real command (Accelerate's precision is fixed once per process); the held-out
    # evaluation runs outside the training step, under the same autocast.
    out = tmp_path / "bf16"
    cmd = [sys.executable, "-m", "vlalign", "train", "--method", "dpo", "--model", str(tiny_base / "llava"),
           "--data", str(prefs), "--eval-data", str(prefs), "--out", str(out)]
    sets = ["max_steps=4", "batch_size=4", "eval_every=2", "mixed_precision=bf16", "lora.enabled=true", "lora.r=4"]
    proc = subprocess.run(cmd + [a for kv in sets for a in ("--set", kv)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "eval/loss" in r] == [2, 4]
    assert all(math.isfinite(r["loss"]) for r in logged if "loss" in r)
    adapter = load_file(str(out / "model" / "adapter_model.safetensors"))
    assert {t.dtype for t in adapter.values()} == {torch.float32}


def test_micro_batches_cover_each_epoch_once():
    rows = [r for k in range(5) for r in micro_batch_rows(20, 4, seed=3, index=k)]
    assert sorted(rows) == list(range(20))
    assert micro_batch_rows(20, 4, seed=3, index=5) != micro_batch_rows(20, 4, seed=3, index=0)


def test_refuses_a_non_empty_output_without_resume(tmp_path, tiny_base, prefs):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    with pytest.raises(UserError, match="not empty"):
        train(_config(tiny_base / "llava", prefs, tmp_path / "run"))
