"""FiSAO in the training loop: rounds, rollouts on disk, resume mid-round and at a round boundary."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from vlalign.errors import UserError
from vlalign.methods import METHODS, FisaoSettings, load_prompts
from vlalign.methods.fisao import pair_answers
from vlalign.rewards.verifier import Calibration
from vlalign.train.config import TrainConfig
from vlalign.train.loop import train


def _config(save_every: int = 3, **fisao) -> TrainConfig:
    settings = dict(rounds=2, prompts_per_round=2, samples=3, epochs=2, max_new_tokens=10, calibration_images=4)
    settings.update(fisao)
    return TrainConfig(method="fisao", batch_size=2, lr=1e-2, warmup_ratio=0.0, save_every=save_every,
                       fisao=FisaoSettings(**settings))


def _train(model, world, out, config: TrainConfig, verifier, **kwargs):
    """``train`` on ``world``'s images, calibrated on its val split, scored by the CLIP in ``verifier``."""
    fisao = replace(config.fisao, verifier=verifier, calibration=world)
    return train(replace(config, model=model, data=world, out=out, fisao=fisao), **kwargs)


@pytest.fixture
def fixed_calibration(monkeypatch):
    """The tiny world's 3-step CLIP separates nothing: give the rewards a fixed, known calibration."""
    import vlalign.methods.fisao as fisao

    def calibrate(vlm, verifier, data, config, processes=None):
        return Calibration(0.2, -0.2, 5, 5, 0.75, config.fisao.patch_level), {"split": data.split}

    monkeypatch.setattr(fisao, "calibrate_rewards", calibrate)


def _weights(out):
    steps = sorted((out / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    return load_file(str(steps[-1] / "trainable.safetensors"))


def test_answers_pair_up_per_image_and_odd_counts_repeat_the_last():
    assert pair_answers(2, 3) == [(0, 1), (2, 2), (3, 4), (5, 5)]
    assert pair_answers(1, 4) == [(0, 1), (2, 3)]
    assert pair_answers(2, 1) == [(0, 0), (1, 1)]


def test_total_steps_counts_every_round_and_epoch():
    # 2 prompts x 3 samples -> 4 pairs a round; batch 2 -> 1 pair a micro-batch; 2 epochs -> 8; 2 rounds -> 16
    assert METHODS['fisao'].steps_for(_config()) == 16
    config = _config()
    config.grad_accum = 3
    assert METHODS[config.method].steps_for(config) == 6  # ceil(16 / 3)
    config.max_steps = 5
    assert METHODS[config.method].steps_for(config) == 5


@pytest.mark.parametrize("cut_at_boundary", [False, True])
def test_a_resumed_fisao_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_world, tiny_base,
                                                                           fixed_calibration, cut_at_boundary):
    inputs = tiny_base / "clip"
    model = tiny_base / "llava"
    # mid-round: 8 micro-batches a round, a checkpoint every 3, killed after step 5 (round 0, epoch 2).
    # boundary: 4 a round, a checkpoint every 4, killed after step 5; round 1's draw is then deleted,
    # so the resumed run draws it again from the checkpoint's weights.
    config = (lambda: _config(epochs=1, save_every=4)) if cut_at_boundary else _config  # noqa: E731
    whole = _train(model, tiny_world, tmp_path / "whole", config(), inputs)
    assert whole["records"] == 48  # the tiny world's train images
    assert sorted(p.name for p in (tmp_path / "whole" / "rollouts").iterdir()) == ["round-0000", "round-0001"]

    class Stop(Exception):
        pass

    def kill(step, total, metrics):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        _train(model, tiny_world, tmp_path / "cut", config(), inputs, on_step=kill)
    if cut_at_boundary:
        shutil.rmtree(tmp_path / "cut" / "rollouts" / "round-0001")
    _train(model, tiny_world, tmp_path / "cut", config(), inputs, resume=True)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and len(a) > 0
    # Adam at lr 1e-2 moves a weight by about 1e-2 a step; it also turns a last-bit difference in
    # a sum into 1e-6 on a weight whose second moment is tiny (seen once, on 1 of 12800).
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-5)
    for round_ in ("round-0000", "round-0001"):
        first = json.loads((tmp_path / "whole" / "rollouts" / round_ / "rollout.json").read_text())
        again = json.loads((tmp_path / "cut" / "rollouts" / round_ / "rollout.json").read_text())
        assert [x["answer"] for x in first["answers"]] == [x["answer"] for x in again["answers"]]
        assert len(first["answers"]) == 6  # 2 images x 3 answers


def test_fisao_logs_its_rounds_and_keeps_each_rollout(tmp_path, tiny_world, tiny_base, fixed_calibration):
    out = tmp_path / "run"
    _train(tiny_base / "llava", tiny_world, out, _config(rounds=1, epochs=1),
          tiny_base / "clip")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("fisao/kl", "fisao/clip_fraction", "fisao/mention_reward", "fisao/sample_s", "fisao/verifier_s"):
        assert key in rows[0]
    assert rows[0]["fisao/ratio"] == pytest.approx(1.0, abs=1e-4)  # the first update is on-policy
    assert rows[0]["fisao/kl"] == pytest.approx(0.0, abs=1e-6)  # and the policy is still the reference
    rollout = json.loads((out / "rollouts" / "round-0000" / "rollout.json").read_text())
    tensors = load_file(str(out / "rollouts" / "round-0000" / "tensors.safetensors"))
    assert tensors["mask"].shape[0] == len(rollout["answers"]) == 6
    for answer in rollout["answers"]:
        for m in answer["mentions"]:
            assert answer["answer"][m["start"]:m["end"]].strip() and -1.0 <= m["reward"] <= 1.0
    assert (out / "model" / "config.json").is_file() and (out / "calibration.json").is_file()


def test_prompts_from_a_file_and_their_mistakes(tmp_path, tiny_world):
    image = next((tiny_world / "images" / "train").iterdir())
    good = tmp_path / "prompts.jsonl"
    good.write_text(json.dumps({"id": "a", "image": str(image), "prompt": "<image>\nDescribe it."}) + "\n\n"
                    + json.dumps({"image": str(image), "prompt": "What is here?"}) + "\n")
    prompts = load_prompts(good)
    assert [(p.id, p.prompt) for p in prompts] == [("a", "Describe it."), ("prompts-3", "What is here?")]
    assert len(load_prompts(tiny_world, "val")) == 8
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "image": str(image), "prompt": "x"}) + "\n" + json.dumps({"image": 3}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: line 2: .*'image' and 'prompt'"):
        load_prompts(bad)
    bad.write_text(json.dumps({"image": "missing.png", "prompt": "x"}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: line 1: image not found"):
        load_prompts(bad)
    with pytest.raises(UserError, match="prompts not found"):
        load_prompts(tmp_path / "nothing.jsonl")


def _dpo_config(save_every: int = 3, **fisao) -> TrainConfig:
    config = _config(save_every, **fisao)
    config.method = "fisao-dpo"
    config.sft_weight = 0.5
    return config


@pytest.mark.parametrize("rank_by", ["sum", "mean"])
def test_fisao_dpo_rounds_pair_each_images_best_answer_with_its_worst(tmp_path, tiny_world, tiny_base,
                                                                      fixed_calibration, rank_by):
    out = tmp_path / "run"
    # 2 images a round -> 2 pairs; batch 2 -> 1 pair a micro-batch; 2 epochs -> 4 steps a round
    config = _dpo_config(rounds=1, prompts_per_round=2, samples=4, rank_by=rank_by)
    assert METHODS[config.method].steps_for(config) == 4
    _train(tiny_base / "llava", tiny_world, out, config, tiny_base / "clip")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    rollout = json.loads((out / "rollouts" / "round-0000" / "rollout.json").read_text())
    tensors = load_file(str(out / "rollouts" / "round-0000" / "tensors.safetensors"))
    assert "old_logps" not in tensors and "advantages" not in tensors
    totals = [sum(m["reward"] for m in a["mentions"]) / (max(1, len(a["mentions"])) if rank_by == "mean" else 1)
              for a in rollout["answers"]]
    preferred = [(a, b) for a, b in rollout["pairs"] if a != b]
    assert rows[0]["fisao_dpo/pairs"] == len(set(map(tuple, preferred))) > 0
    for a, b in preferred:
        image = range(a // 4 * 4, a // 4 * 4 + 4)
        assert b in image and totals[a] == max(totals[i] for i in image) > totals[b] == min(totals[i] for i in image)
        for side, sign in ((a, 1.0), (b, -1.0)):
            expected = torch.ones(int(tensors["mask"][side].sum()))
            for m in rollout["answers"][side]["mentions"]:
                expected[m["tokens"]] = max(0.0, 1.0 + sign * m["reward"])  # fisao.token_weight 1
            torch.testing.assert_close(tensors["weights"][side, :len(expected)], expected)


def test_a_resumed_fisao_dpo_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_world, tiny_base,
                                                                               fixed_calibration):
    inputs = tiny_base / "clip"
    model = tiny_base / "llava"
    config = lambda: _dpo_config(prompts_per_round=3, samples=6)  # noqa: E731  3 micro-batches an epoch, 6 a round
    _train(model, tiny_world, tmp_path / "whole", config(), inputs)
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    # the tiny model's answers must give preferences in both rounds, and the policy must move,
    # or the two runs would agree trivially; steps past a round's pairs train nothing and log no loss
    trained = [r for r in rows if "loss" in r]
    assert len(rows) == 12 and {r["fisao/round"] for r in trained} == {0.0, 1.0}
    assert all(r["fisao_dpo/pairs"] > 0 for r in trained)
    assert abs(trained[-1]["rewards/margin"]) > 1e-3

    class Stop(Exception):
        pass

    def kill(step, total, metrics):
        if step == 4:  # checkpoint at 3: round 0, epoch 2
            raise Stop

    with pytest.raises(Stop):
        _train(model, tiny_world, tmp_path / "cut", config(), inputs, on_step=kill)
    _train(model, tiny_world, tmp_path / "cut", config(), inputs, resume=True)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change, message", [
    ({"fisao": FisaoSettings(token_weight=-0.5)}, "token_weight must be >= 0"),
    ({"fisao": FisaoSettings(rank_by="max")}, "rank_by must be sum or mean"),
    ({"reference": "precomputed"}, "fisao-dpo scores new inputs every step"),
])
def test_fisao_dpo_settings_are_checked(change, message):
    config = TrainConfig(method="fisao-dpo", **change)
    with pytest.raises(ValueError, match=message):
        config.validate()
