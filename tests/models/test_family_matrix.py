"""Every family, every job: train each method, LoRA and merge, evaluate, write noisy pairs, resume.

One tiny random-init model per family (``vlalign.models.tiny_families``; ``llava`` is the tiny
world's pretrained base), all through the library's own entry points in this one process (a CLI
process per family and method would not fit CI's budget; the CLI is tested on ``llava`` and
``qwen2_vl`` in tests/test_cli.py). A check is one cell of the matrix ``family x job``.

FiSAO's sampled answers are replaced by fixed ones that name the world's objects: a random model
seldom names one, and answers with no object word have no reward, so a round would have nothing
to learn from. Sampling itself is the generation that the ``eval`` cells run for every family.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlalign.eval.run import EvalConfig, evaluate
from vlalign.generate.noisy import NoisyConfig, run_noisy
from vlalign.methods import FisaoSettings
from vlalign.models.load import load_vlm
from vlalign.models.tiny_families import FAMILIES, save_tiny
from vlalign.text.vocabulary import Vocabulary
from vlalign.train.config import LoraSettings, TrainConfig
from vlalign.train.loop import train
from vlalign.train.merge import merge

MATRIX_FAMILIES = ["llava", *FAMILIES]
METHODS = ["dpo", "povid", "tpo", "fisao", "fisao-dpo"]


@pytest.fixture(scope="module")
def models(tiny_base, tmp_path_factory):
    """``models(family) -> Path``: the family's tiny model directory, saved on first use."""
    root = tmp_path_factory.mktemp("families")
    saved: dict[str, Path] = {"llava": tiny_base / "llava"}

    def get(family: str) -> Path:
        if family not in saved:
            saved[family] = save_tiny(family, root / family)
        return saved[family]

    return get


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    path.write_text(json.dumps({"mean_correct": 0.3, "mean_hallucinated": 0.1, "num_correct": 9,
                                "num_hallucinated": 4, "auc": 0.8, "patch_level": False}))
    return path


@pytest.fixture
def fixed_answers(monkeypatch, tiny_world):
    """FiSAO's samples: answer k to an image names two of the world's objects, a different two for each k."""
    import vlalign.methods.fisao as fisao

    words = Vocabulary.load(tiny_world).categories

    def answers(vlm, images, questions, config, seed):
        k = config.fisao.samples
        return [f"A {words[j % len(words)]} next to a {words[(3 * j + 1) % len(words)]}."
                for _ in images for j in range(k)]

    monkeypatch.setattr(fisao, "sample_answers", answers)


def run_config(method: str, model: Path, tiny_prefs: Path, world: Path, out: Path, clip: Path,
               calibration: Path, **fields) -> TrainConfig:
    on_policy = method.startswith("fisao")
    fisao = FisaoSettings(rounds=1, prompts_per_round=2, samples=2, epochs=1, max_new_tokens=6, calibration_images=2,
                          verifier=str(clip), calibration=str(calibration))
    base = dict(model=model, data=world if on_policy else tiny_prefs, out=out, method=method, batch_size=2, lr=1e-2,
                warmup_ratio=0.0, max_steps=0 if on_policy else 2, fisao=fisao, sft_weight=0.5 if on_policy else 0.0)
    return TrainConfig(**{**base, **fields})


def moved_weights(before: Path, after: Path) -> list[str]:
    start = load_vlm(before, dtype="float32").model.state_dict()
    end = load_vlm(after, dtype="float32").model.state_dict()
    return [k for k in start if not torch.equal(start[k], end[k])]


def logged(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", MATRIX_FAMILIES)
def test_each_method_trains(family, method, models, tiny_prefs, tiny_world, tiny_base, calibration, fixed_answers, tmp_path):
    out = tmp_path / "run"
    config = run_config(method, models(family), tiny_prefs, tiny_world, out, tiny_base / "clip", calibration)
    summary = train(config)
    rows = [r for r in logged(out) if "loss" in r]
    assert summary["steps"] >= 1 and rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert moved_weights(models(family), out / "model"), f"{family} {method}: training changed nothing"


@pytest.mark.parametrize("family", MATRIX_FAMILIES)
def test_lora_then_merge(family, models, tiny_prefs, tiny_world, tiny_base, calibration, tmp_path):
    out = tmp_path / "lora"
    lora = LoraSettings(enabled=True, r=4, alpha=8)
    train(run_config("dpo", models(family), tiny_prefs, tiny_world, out, tiny_base / "clip", calibration,
                     lora=lora))
    assert (out / "model" / "adapter_config.json").is_file()
    rows = logged(out)
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-4)  # LoRA starts at zero: the policy is the reference
    merge(out / "model", tmp_path / "merged", base=models(family))
    changed = moved_weights(models(family), tmp_path / "merged")
    assert changed and not any("lora" in name for name in changed)


@pytest.mark.parametrize("family", MATRIX_FAMILIES)
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(family, models, tiny_prefs, tiny_world, tiny_base, calibration,
                                                            tmp_path):
    def config(out):
        return run_config("dpo", models(family), tiny_prefs, tiny_world, out, tiny_base / "clip", calibration,
                          max_steps=3, save_every=1)

    train(config(tmp_path / "whole"))

    class Stop(Exception):
        pass

    def stop(step, total, metrics):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        train(config(tmp_path / "cut"), on_step=stop)
    train(config(tmp_path / "cut"), resume=True)
    whole, cut = (load_file(str(run / "checkpoints" / "step-3" / "trainable.safetensors"))
                  for run in (tmp_path / "whole", tmp_path / "cut"))
    assert whole.keys() == cut.keys() and whole
    for name in whole:
        torch.testing.assert_close(cut[name], whole[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("job", ["chair", "pope-generate", "pope-logits"])
@pytest.mark.parametrize("family", MATRIX_FAMILIES)
def test_eval_generates_in_batches_and_scores(family, job, models, tiny_world):
    what, _, mode = job.partition("-")
    config = EvalConfig(num_images=3, batch_size=2, max_new_tokens=5, pope_max_new_tokens=3, pope_mode=mode or "generate",
                        dtype="float32", device="cpu")
    run = evaluate(models(family), tiny_world, what, config)
    if what == "chair":  # batched greedy descriptions of 3 images
        chair = run.get("chair")
        assert len(chair.items) == 3 and 0 <= chair.metrics["chair_i"] <= 100
        return
    splits = [r for r in run.results if r.benchmark == "pope"]
    answers = [a for s in splits for a in s.items]
    assert len(splits) == 3 and answers and all(0.0 <= s.metrics["accuracy"] <= 100.0 for s in splits)
    if mode == "logits":  # the Yes/No next-token scores answer exactly Yes or No
        assert {a["answer"] for a in answers} <= {"Yes", "No"}


@pytest.mark.parametrize("family", MATRIX_FAMILIES)
def test_noisy_pairs_are_the_models_answers_to_corrupted_images(family, models, tiny_world, tmp_path):
    out = tmp_path / "noisy.jsonl"
    counts = run_noisy(models(family), tiny_world, out, NoisyConfig(limit=3, batch_size=2, max_new_tokens=5,
                                                                     device="cpu", dtype="float32"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert counts["written"] + counts["same_as_chosen"] == 3 and len(rows) == counts["written"]
    assert all(r["source"] == "noisy:diffusion500" and r["chosen"] != r["rejected"] for r in rows)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3"])  # the fast path, rope positions, nested images
def test_inspect_rewards_scores_every_token(family, models, tiny_prefs, tiny_world, tmp_path):
    from vlalign.inspect.rewards import InspectConfig
    from vlalign.inspect.run import inspect_rewards

    summary = inspect_rewards(models(family), tiny_prefs, tmp_path / "inspect", Vocabulary.load(tiny_world),
                              InspectConfig(limit=2, batch_size=2), device="cpu")
    assert summary["records"] == 2 and (tmp_path / "inspect" / "rewards.html").is_file()
