"""Two real processes over gloo: `accelerate launch` runs every step of a training run to its end.

On a CPU, two processes are ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2``
(``--cpu --num_processes 2`` starts only one).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], out: Path) -> subprocess.CompletedProcess:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "vlalign", "train", "--out", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env, check=False)


def last_step(out: Path) -> int:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max(r["step"] for r in rows if "loss" in r)


def test_dpo_over_two_processes_reaches_its_last_step(tmp_path, tiny_base, tiny_prefs):
    out = tmp_path / "dpo"
    proc = launch(["--method", "dpo", "--model", str(tiny_base / "llava"), "--data", str(tiny_prefs),
                   "--set", "max_steps=3", "--set", "batch_size=2"], out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dpo: 3 steps" in proc.stdout
    assert last_step(out) == 3 and (out / "model" / "config.json").is_file()


def test_fisao_over_two_processes_reaches_its_last_step(tmp_path, tiny_world, tiny_base):
    calibration = tmp_path / "calibration.json"  # the tiny CLIP separates nothing: baselines from a file
    calibration.write_text(json.dumps({"mean_correct": 0.3, "mean_hallucinated": 0.1, "num_correct": 9,
                                       "num_hallucinated": 4, "auc": 0.8, "patch_level": False}))
    out = tmp_path / "fisao"
    proc = launch(["--method", "fisao", "--model", str(tiny_base / "llava"), "--prompts", str(tiny_world),
                   "--verifier", str(tiny_base / "clip"), "--calibration", str(calibration),
                   "--set", "fisao.rounds=1", "--set", "fisao.prompts_per_round=2", "--set", "fisao.samples=2",
                   "--set", "fisao.max_new_tokens=8", "--set", "fisao.epochs=1", "--set", "batch_size=2"], out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fisao: 2 steps" in proc.stdout
    assert last_step(out) == 2
