"""The `vlalign` command: real runs on tiny settings, and one clear line for every user mistake."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import torch

from conftest import TINY_SIZES, TINY_WORLD
from vlalign.cli import main
from vlalign.eval.results import read_results

WORLD_SETS = [f"{k}={v}" for k, v in TINY_WORLD.items()]


def _sets(flag: str, pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in (flag, pair)]


def test_world_make_command_writes_a_world(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vlalign", "world", "make", "--out", str(tmp_path / "w"),
                           *_sets("--set", WORLD_SETS)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "world written to" in proc.stdout
    config = json.loads((tmp_path / "w" / "world.json").read_text())["config"]
    assert config["num_train"] == TINY_WORLD["num_train"] and config["image_size"] == 32


def test_world_make_refuses_non_empty_directory(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mine.txt").write_text("x")
    assert main(["world", "make", "--out", str(tmp_path / "w"), *_sets("--set", WORLD_SETS)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--overwrite" in err[0]
    assert (tmp_path / "w" / "mine.txt").exists()


@pytest.mark.parametrize("override, message", [
    ("num_trian=3", "unknown field num_trian"),
    ("num_train=many", "field num_train must be int"),
    ("train_prior=1.5", "train_prior must be in [0, 1]"),
    ("categories=[dog, unicorn]", "unknown category 'unicorn'"),
    ("seed", "expected key=value"),
])
def test_world_make_rejects_bad_config(tmp_path, capsys, override, message):
    assert main(["world", "make", "--out", str(tmp_path / "w"), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_world_make_config_file_errors_name_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nnum_train: [1,\n")
    assert main(["world", "make", "--out", str(tmp_path / "w"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line" in err and "not valid YAML" in err


def test_pretrain_on_missing_world_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vlalign", "world", "pretrain", "--world", str(tmp_path / "none"),
                           "--out", str(tmp_path / "base")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "none") in lines[0] and "Traceback" not in proc.stderr


def test_pretrain_on_malformed_world_names_file_and_line(tmp_path, tiny_world, capsys):
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world)
    lines = (world / "sft_train.jsonl").read_text().splitlines()
    lines[2] = lines[2][:40]
    (world / "sft_train.jsonl").write_text("\n".join(lines) + "\n")
    sizes = [f"sizes.{k}={v}" for k, v in TINY_SIZES.items()]
    assert main(["world", "pretrain", "--world", str(world), "--out", str(tmp_path / "base"),
                 *_sets("--set", [*sizes, "clip_steps=1"])]) == 2
    err = capsys.readouterr().err
    assert f"{world / 'sft_train.jsonl'}: line 3: not valid JSON" in err
    assert not (tmp_path / "base").exists()


def test_pretrain_command_end_to_end(tmp_path, tiny_world):
    sizes = [f"sizes.{k}={v}" for k, v in TINY_SIZES.items()]
    sets = [*sizes, "clip_steps=2", "clip_batch_size=8", "llava_epochs=0.2", "llava_batch_size=8", "patch_align_steps=0"]
    proc = subprocess.run([sys.executable, "-m", "vlalign", "world", "pretrain", "--world", str(tiny_world),
                           "--out", str(tmp_path / "base"), *_sets("--set", sets)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "base models written to" in proc.stdout
    assert (tmp_path / "base" / "llava" / "model.safetensors").is_file()
    again = subprocess.run([sys.executable, "-m", "vlalign", "world", "pretrain", "--world", str(tiny_world),
                            "--out", str(tmp_path / "base")], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr
    align = [sys.executable, "-m", "vlalign", "world", "align-patches", "--world", str(tiny_world),
             "--base", str(tmp_path / "base"), "--set", "patch_align_steps=2", "--set", "patch_align_batch_size=8"]
    proc = subprocess.run(align, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{tmp_path / 'base'}/clip: 2 patch alignment steps in" in proc.stdout
    again = subprocess.run(align, capture_output=True, text=True, timeout=120)
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 2 and len(lines) == 1 and "already had 2 patch alignment steps" in lines[0]


def test_demo_trains_every_method_reports_then_reuses(tmp_path):
    from vlalign.rewards.verifier import Calibration

    run = tmp_path / "run"
    sizes = [f"sizes.{k}={v}" for k, v in TINY_SIZES.items()]
    pretrain_sets = [*sizes, "clip_steps=2", "clip_batch_size=8", "llava_epochs=0.2", "llava_batch_size=8",
                     "patch_align_steps=2", "patch_align_batch_size=8"]
    train_sets = ["max_steps=2", "batch_size=2", "fisao:fisao.prompts_per_round=2", "fisao:fisao.samples=2",
                  "fisao:fisao.max_new_tokens=8"]
    # A tiny random model names too few objects to measure FiSAO's reward baselines; a run
    # directory that already holds them (as a resumed run's does) skips that measurement.
    (run / "train" / "fisao-seed0").mkdir(parents=True)
    Calibration(0.3, 0.1, 10, 10, 0.8, True).save(run / "train" / "fisao-seed0" / "calibration.json")  # patch level
    cmd = [sys.executable, "-m", "vlalign", "demo", "--out", str(run), "--eval-images", "4", "--jobs", "2",
           *_sets("--world-set", WORLD_SETS), *_sets("--pretrain-set", pretrain_sets), *_sets("--train-set", train_sets)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    for method in ("base", "dpo", "povid", "tpo", "fisao"):
        assert f"| {method} |" in first.stdout
    summary = json.loads((run / "demo.json").read_text())
    stages = {"world", "pretrain", "data", "eval base", "inspect"} | {
        f"{what} {m}-seed0" for what in ("train", "eval") for m in ("dpo", "povid", "tpo", "fisao")}
    assert set(summary["timings"]) == stages and summary["complete"]
    assert summary["settings"]["train"]["fisao"]["fisao"]["samples"] == 2 and summary["settings"]["preset"] == "standard"
    assert summary["settings"]["train"]["dpo"]["max_steps"] == 2 and summary["settings"]["eval_images"] == 4
    sources = Counter(json.loads(line)["source"] for line in (run / "prefs" / "objects.jsonl").read_text().splitlines())
    assert summary["settings"]["data"]["questions"] == 1 and sources["inject:question"] > 0 < sources["inject:rules"]
    for name in ("base", "dpo-seed0", "fisao-seed0"):
        saved = json.loads((run / "eval" / f"{name}.json").read_text())
        chair = next(r for r in saved["results"] if r["benchmark"] == "chair")
        assert saved["config"]["pope_mode"] == "logits" and len(chair["items"]) == 4
    assert (run / "train" / "tpo-seed0" / "model" / "model.safetensors").is_file()
    assert (run / "report.html").stat().st_size > 10_000
    # Timings are recorded, not compared: which is larger depends on the machine's load.
    assert summary["wall_seconds"] > 0 and summary["total_seconds"] > 0
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "running" not in second.stderr and second.stderr.count("reusing") == len(stages)
    assert json.loads((run / "demo.json").read_text()) == summary
    (run / "eval" / "povid-seed0.json").unlink()  # one stage to redo, in this process this time
    third = subprocess.run([*cmd, "--jobs", "1"], capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "running eval povid-seed0" in third.stderr and third.stderr.count("running") == 1
    assert (run / "eval" / "povid-seed0.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--methods", "dpo,ppo"], "'ppo' is not one of dpo, povid, tpo, fisao"),
    (["--seeds", "0"], "seeds"),
    (["--train-set", "dpo:no_such_field=1"], "no_such_field"),
])
def test_demo_mistakes_are_one_line(tmp_path, capsys, args, message):
    assert main(["demo", "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run" / "world").exists()


def test_eval_all_writes_settings_answers_and_metrics(tmp_path, tiny_world, tiny_base):
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "vlalign", "eval", "all", "--model", str(tiny_base / "llava"),
                           "--data", str(tiny_world), "--num-images", "5", "--batch-size", "4", "--out", str(out),
                           "--max-new-tokens", "12", "--pope-max-new-tokens", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| chair | chair_s | chair_i | recall | len | num_captions |" in proc.stdout and "| popular |" in proc.stdout
    context, results = read_results(out)
    assert context["config"]["split"] == "test" and context["data_kind"] == "world"
    chair = results[0]
    assert (chair.benchmark, chair.protocol["prompt"], chair.protocol["image_subset"]["count"]) == ("chair", "Describe this image.", 5)
    assert chair.protocol["decoding"] == {"max_new_tokens": 12, "do_sample": False, "temperature": 1.0,
                                          "top_p": 1.0, "seed": 0}
    assert all("caption" in row and "hallucinated" in row for row in chair.items)
    ids = [row["image_id"] for row in chair.items]
    assert (tmp_path / "eval.images.txt").read_text().splitlines()[1:] == [str(i) for i in ids]
    assert [(r.benchmark, r.subset) for r in results[1:]] == [("pope", s) for s in ("random", "popular", "adversarial")]
    for pope in results[1:]:
        assert pope.protocol["parser"] == "official" and pope.protocol["mode"] == "generate"
        assert {"accuracy", "precision", "recall", "f1", "yes_ratio"} <= set(pope.metrics)
        assert all("answer" in row and "label" in row for row in pope.items)


@pytest.mark.parametrize("args, message", [
    (["--split", "val2014"], "instances_val2014.json: missing"),
    (["--pope-mode", "guess"], "invalid choice"),
])
def test_eval_bad_input_is_one_line(tmp_path, tiny_world, tiny_base, args, message):
    proc = subprocess.run([sys.executable, "-m", "vlalign", "eval", "pope", "--model", str(tiny_base / "llava"),
                           "--data", str(tiny_world), "--out", str(tmp_path / "e.json"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "e.json").exists()


def test_eval_of_a_missing_model_names_it(tmp_path, tiny_world, capsys):
    code = main(["eval", "chair", "--model", str(tmp_path / "nope"), "--data", str(tiny_world)])
    assert code == 2 and "nope" in capsys.readouterr().err


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_eval_scores_a_captions_file_and_names_images_without_ground_truth(tmp_path, tiny_world, capsys):
    from vlalign.data.datasets import open_data

    data = open_data(tiny_world, "test")
    first, second = sorted(data.files)[:2]
    rows = [{"image_id": first, "caption": "A dog and a dog."}, {"image_id": second, "caption": ""},
            {"image_id": 999999, "caption": "A cup."}]
    captions = _jsonl(tmp_path / "captions.jsonl", rows)
    code = main(["eval", "chair", "--data", str(tiny_world), "--captions", captions])
    err = capsys.readouterr().err
    assert code == 2 and "no CHAIR ground truth for 1 image id(s): 999999" in err
    out = tmp_path / "chair.json"
    code = main(["eval", "chair", "--data", str(tiny_world), "--captions", captions, "--skip-missing", "--out", str(out)])
    assert code == 0 and "| chair | chair_s |" in capsys.readouterr().out
    metrics = read_results(out)[1][0].metrics
    assert metrics["num_captions"] == 2 and metrics["num_empty"] == 1 and metrics["num_skipped"] == 1
    assert metrics["num_mentions"] == 2  # repeats count


def test_eval_scores_an_answers_file_by_question_id_never_by_position(tmp_path, capsys):
    questions = _jsonl(tmp_path / "pope_random.jsonl", [
        {"question_id": 1, "image": "a.png", "text": "Is there a dog in the image?", "label": "yes"},
        {"question_id": 2, "image": "a.png", "text": "Is there a cup in the image?", "label": "no"},
        {"question_id": 3, "image": "a.png", "text": "Is there a car in the image?", "label": "yes"},
    ])
    shuffled = _jsonl(tmp_path / "answers.jsonl", [{"question_id": 3, "answer": "No."},
                                                   {"question_id": 1, "answer": "Yes"},
                                                   {"question_id": 2, "answer": "No, there is not."}])
    out = tmp_path / "pope.json"
    assert main(["eval", "pope", "--questions", questions, "--answers", shuffled, "--out", str(out)]) == 0
    (result,) = read_results(out)[1]
    metrics = result.metrics
    assert result.subset == "random" and result.protocol["lineage"] == "original"
    assert (metrics["tp"], metrics["fn"], metrics["tn"], metrics["fp"]) == (1, 1, 1, 0)
    capsys.readouterr()
    missing = _jsonl(tmp_path / "short.jsonl", [{"question_id": 1, "answer": "Yes"}, {"question_id": 7, "answer": "No"}])
    assert main(["eval", "pope", "--questions", questions, "--answers", missing]) == 2
    err = capsys.readouterr().err
    assert "2 (2, 3)" in err and "7" in err and err.count("\n") == 1


def test_data_convert_lists_every_bad_record_or_skips_and_reports_them(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    good = {"id": "1", "image": "a.png", "prompt": "Describe.", "chosen": "A cup.", "rejected": "A dog.", "source": "human"}
    rows = [good, {**good, "id": "2", "rejected": "A cup."}, {**good, "id": "3", "image": "gone.png"}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    assert main(["data", "convert", str(src), str(tmp_path / "out.jsonl"), "--to", "trl"]) == 2
    err = capsys.readouterr().err
    assert f"{src}: line 2: chosen equals rejected" in err
    assert f"{src}: line 3: image not found" in err and f"{src}: line 4:" in err
    assert "3 bad record(s)" in err and not (tmp_path / "out.jsonl").exists()
    assert main(["data", "convert", str(src), str(tmp_path / "out.jsonl"), "--to", "trl", "--on-bad", "skip"]) == 0
    assert "1 records written" in capsys.readouterr().out
    (row,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert row["images"] == ["a.png"] and row["chosen"] == "A cup." and row["prompt"] == "Describe."
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert [b["line"] for b in report["bad"]] == [2, 3, 4]


def test_generate_noisy_writes_the_models_answers_to_corrupted_images(tmp_path, tiny_world, tiny_base):
    out = tmp_path / "noisy.jsonl"
    cmd = [sys.executable, "-m", "vlalign", "generate", "noisy", "--model", str(tiny_base / "llava"), "--data",
           str(tiny_world), "--out", str(out), "--limit", "6", "--max-new-tokens", "8", "--batch-size", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    report = json.loads((tmp_path / "noisy.jsonl.report.json").read_text())
    assert len(rows) + report["counts"]["same_as_chosen"] == 6
    for row in rows:
        assert row["source"] == "noisy:diffusion500" and row["chosen"] != row["rejected"]
        assert not row["chosen"].startswith(("Yes", "No"))  # descriptions only by default
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0 and f"{len(rows)} already there" in again.stdout


@pytest.mark.parametrize("method", ["dpo", "povid", "tpo"])
def test_train_runs_end_to_end_and_the_model_loads(tmp_path, tiny_world, tiny_base, method):
    prefs = tmp_path / "prefs.jsonl"
    assert main(["generate", "inject", "--data", str(tiny_world), "--out", str(prefs), "--limit", "24"]) == 0
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vlalign", "train", "--method", method, "--model", str(tiny_base / "llava"),
           "--data", str(prefs), "--out", str(out), "--set", "max_steps=3", "--set", "batch_size=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{method}: 3 steps on 24 pairs" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and ("noise/flipped_tokens" in rows[0]) == (method == "povid")
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(out / "model")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 2 and "not empty (pass --resume" in again.stderr


def test_a_runs_config_json_reruns_it(tmp_path, tiny_world, tiny_base):
    prefs = tmp_path / "prefs.jsonl"
    assert main(["generate", "inject", "--data", str(tiny_world), "--out", str(prefs), "--limit", "8"]) == 0
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--config", "world/povid", "--model", str(tiny_base / "llava"), "--data", str(prefs),
                 "--out", str(first), "--set", "max_steps=2", "--set", "batch_size=4", "--set", "povid.noise_step=300"]) == 0
    saved = json.loads((first / "config.json").read_text())
    assert (saved["model"], saved["data"], saved["out"], saved["povid"]["noise_step"]) == (
        str(tiny_base / "llava"), str(prefs), str(first), 300)
    assert main(["train", "--config", str(first / "config.json"), "--set", f"out={second}"]) == 0
    from safetensors.torch import load_file

    a, b = (load_file(str(run / "model" / "model.safetensors")) for run in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_training_then_merge_gives_a_plain_model(tmp_path, tiny_world, tiny_base, capsys):
    prefs = tmp_path / "prefs.jsonl"
    assert main(["generate", "inject", "--data", str(tiny_world), "--out", str(prefs), "--limit", "16"]) == 0
    assert main(["train", "--method", "dpo", "--model", str(tiny_base / "llava"), "--data", str(prefs),
                 "--out", str(tmp_path / "run"), "--set", "max_steps=2", "--set", "batch_size=4",
                 "--set", "lora.enabled=true", "--set", "lora.r=4", "--set", "lr=1e-2"]) == 0
    assert (tmp_path / "run" / "model" / "adapter_config.json").is_file()
    assert main(["merge", "--adapter", str(tmp_path / "run" / "model"), "--out", str(tmp_path / "merged")]) == 0
    from vlalign.models.load import load_vlm

    merged = load_vlm(tmp_path / "merged", dtype="float32", device="cpu").model
    base = load_vlm(tiny_base / "llava", dtype="float32", device="cpu").model
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    changed = [n for (n, a), (_, b) in zip(merged.named_parameters(), base.named_parameters()) if not a.equal(b)]
    assert changed and all("language_model" in n or "projector" in n for n in changed)


def test_train_config_mistakes_are_one_line(tmp_path, tiny_base, capsys):
    assert main(["train", "--model", str(tiny_base / "llava"), "--data", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "run"), "--set", "reference=precomputed", "--method", "povid"]) == 2
    assert "needs a live reference" in capsys.readouterr().err
    assert main(["train", "--model", str(tiny_base / "llava"), "--data", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err


def test_inspect_rewards_writes_page_pictures_and_scores(tmp_path, tiny_world, tiny_base):
    prefs = tmp_path / "prefs.jsonl"
    assert main(["generate", "inject", "--data", str(tiny_world), "--out", str(prefs), "--limit", "6"]) == 0
    rows = [json.loads(line) for line in prefs.read_text().splitlines()]
    rows[0]["chosen"] += " <script>alert(1)</script>"
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "inspect"
    cmd = [sys.executable, "-m", "vlalign", "inspect", "rewards", "--model", str(tiny_base / "llava"), "--data",
           str(prefs), "--out", str(out), "--vocab", str(tiny_world), "--batch-size", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{len(rows)} records scored" in proc.stdout and "| present |" in proc.stdout
    assert {p.name for p in out.iterdir()} == {"rewards.html", "tokens.png", "histogram.png", "scores.jsonl",
                                               "summary.json"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == len(rows) and summary["words"]["present"]["words"] > 0
    scored = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    for row, rec in zip(rows, scored):
        for side in ("chosen", "rejected"):
            tokens = rec[side]["tokens"]
            assert "".join(row[side][a:b] for a, b in (t["span"] for t in tokens)) == row[side]
        assert rec["rejected"]["edits"] == [e["span"] for e in row["meta"]["edits"]]
    page = (out / "rewards.html").read_text()
    assert "<script" not in page and "&lt;" in page  # the tokens of "<script>" are shown, escaped
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 2 and "not empty (pass --overwrite" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "0"], "--batch-size: batch_size must be at least 1"),
    (["--vocab", "missing-synonyms.txt"], "missing-synonyms.txt: COCO synonyms file not found"),
])
def test_inspect_rewards_bad_input_is_one_line(tmp_path, tiny_world, tiny_base, capsys, extra, message):
    prefs = tmp_path / "prefs.jsonl"
    assert main(["generate", "inject", "--data", str(tiny_world), "--out", str(prefs), "--limit", "2"]) == 0
    capsys.readouterr()
    args = ["inspect", "rewards", "--model", str(tiny_base / "llava"), "--data", str(prefs), "--out",
            str(tmp_path / "out"), "--vocab", str(tiny_world), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("method, printed", [
    ("fisao", "fisao: 4 steps on 48 prompts"),  # 2 images x 4 answers = 4 pairs, 2 a batch, 2 epochs
    ("fisao-dpo", "fisao-dpo: 2 steps on 48 prompts"),  # 2 images -> 2 (best, worst) pairs, 2 a batch, 2 epochs
])
def test_train_fisao_runs_end_to_end_from_a_reused_calibration(tmp_path, tiny_world, tiny_base, method, printed):
    # The tiny world's 3-step CLIP cannot separate anything, so the baselines come from a file,
    # as they do when a run reuses an earlier run's calibration.json.
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"mean_correct": 0.3, "mean_hallucinated": 0.1, "num_correct": 9,
                                       "num_hallucinated": 4, "auc": 0.8, "patch_level": False}))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vlalign", "train", "--method", method, "--model", str(tiny_base / "llava"),
           "--prompts", str(tiny_world), "--verifier", str(tiny_base / "clip"), "--calibration", str(calibration),
           "--out", str(out), "--set", "fisao.rounds=1", "--set", "fisao.prompts_per_round=2",
           "--set", "fisao.max_new_tokens=12", "--set", "batch_size=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert printed in proc.stdout
    assert json.loads((out / "calibration.json").read_text())["mean_correct"] == 0.3
    rollout = json.loads((out / "rollouts" / "round-0000" / "rollout.json").read_text())
    assert len(rollout["answers"]) == 8
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(out / "model")


@pytest.mark.parametrize("args, message", [
    (["--data", "x.jsonl"], "give --prompts, not --data"),
    (["--prompts", "WORLD"], "fisao.verifier (--verifier) not set"),
    (["--method", "fisao-dpo", "--prompts", "WORLD"], "train --method fisao-dpo: fisao.verifier (--verifier) not set"),
    ([], "data (--data) not set"),
    (["--prompts", "WORLD", "--verifier", "BASE/llava"], "holds a 'llava' model: expected a CLIP model"),
    (["--prompts", "WORLD", "--verifier", "BASE/clip", "--calibration", "BAD"], "missing field 'auc'"),
])
def test_train_fisao_mistakes_are_one_line(tmp_path, tiny_world, tiny_base, capsys, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"mean_correct": 0.3, "mean_hallucinated": 0.1, "num_correct": 9,
                               "num_hallucinated": 4, "patch_level": False}))
    args = [a.replace("WORLD", str(tiny_world)).replace("BASE", str(tiny_base)).replace("BAD", str(bad)) for a in args]
    code = main(["train", "--method", "fisao", "--model", str(tiny_base / "llava"), "--out", str(tmp_path / "run"),
                 *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert main(["train", "--method", "dpo", "--model", str(tiny_base / "llava"), "--out", str(tmp_path / "run"),
                 "--data", "x.jsonl", "--verifier", "v"]) == 2
    assert "--verifier belong to --method fisao or fisao-dpo" in capsys.readouterr().err


def test_every_command_vlalign_help_lists_parses(capsys):
    """``vlalign --help`` and each group's help list only commands that exist (``data validate`` does)."""
    import argparse

    from vlalign.cli import build_parser

    def commands(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield [*path, name]
                    yield from commands(child, [*path, name])

    listed = list(commands(build_parser(), []))
    assert ["data", "validate"] in listed and ["data", "convert"] in listed
    for command in listed:
        with pytest.raises(SystemExit) as done:
            main([*command, "--help"])
        assert done.value.code == 0, command
        assert capsys.readouterr().out.startswith(f"usage: vlalign {' '.join(command)}"), command
