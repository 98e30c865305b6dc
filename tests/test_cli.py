"""The `vlalign` command: real runs on tiny settings, and one clear line for every user mistake."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import TINY_SIZES, TINY_WORLD
from vlalign.cli import main

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
    sets = [*sizes, "clip_steps=2", "clip_batch_size=8", "llava_epochs=0.2", "llava_batch_size=8"]
    proc = subprocess.run([sys.executable, "-m", "vlalign", "world", "pretrain", "--world", str(tiny_world),
                           "--out", str(tmp_path / "base"), *_sets("--set", sets)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "base models written to" in proc.stdout
    assert (tmp_path / "base" / "llava" / "model.safetensors").is_file()
    again = subprocess.run([sys.executable, "-m", "vlalign", "world", "pretrain", "--world", str(tiny_world),
                            "--out", str(tmp_path / "base")], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_demo_makes_pretrains_probes_then_reuses(tmp_path):
    sizes = [f"sizes.{k}={v}" for k, v in TINY_SIZES.items()]
    pretrain_sets = [*sizes, "clip_steps=2", "clip_batch_size=8", "llava_epochs=0.2", "llava_batch_size=8"]
    cmd = [sys.executable, "-m", "vlalign", "demo", "--out", str(tmp_path / "run"), "--probe-images", "3",
           *_sets("--world-set", WORLD_SETS), *_sets("--pretrain-set", pretrain_sets)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "base model on 3 unseen test images" in first.stdout and "recall" in first.stdout
    assert (tmp_path / "run" / "base" / "llava" / "model.safetensors").is_file()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "reusing world" in second.stdout and "reusing base models" in second.stdout
