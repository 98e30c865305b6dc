"""Two real processes over gloo equal one process with the same global batch, for every method and engine.

On a CPU, two processes are ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2``
(``--cpu --num_processes 2`` starts only one). Each two-process run is compared with one process
run in this test's own process: batch B x accumulation A x 2 processes against batch 2AB x 1 x 1.

DeepSpeed runs its CPU accelerator here (``DS_ACCELERATOR=cpu``); ``ACCELERATE_USE_CPU`` must not be
set then, or Accelerate drops DeepSpeed. The shipped configs are used, ZeRO-3's persistence
threshold at 0 so that the tiny model is really partitioned (its tensors are all below the default).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from vlalign.config import load_config
from vlalign.recipes import launch_config
from vlalign.train.config import TrainConfig
from vlalign.train.loop import train

METHODS = ["dpo", "povid", "tpo", "fisao", "fisao-dpo"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(args: list[str], out: Path) -> list[str]:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    return [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            "-m", "vlalign", "train", "--out", str(out), *args]


ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def launch(args: list[str], out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(launch_command(args, out), capture_output=True, text=True, timeout=420, env=ENV,
                          check=False)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    """The tiny CLIP separates nothing: FiSAO's reward baselines from a file."""
    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    path.write_text(json.dumps({"mean_correct": 0.3, "mean_hallucinated": 0.1, "num_correct": 9,
                                "num_hallucinated": 4, "auc": 0.8, "patch_level": False}))
    return path


def settings(method: str, processes: int, tiny_world, tiny_base, tiny_prefs, calibration) -> list[str]:
    """``--set`` pairs of a run whose optimizer step takes 4 records (or 4 FiSAO answer pairs) in all."""
    on_policy = method.startswith("fisao")
    values = {"method": method, "model": tiny_base / "llava", "lr": 1e-3, "warmup_ratio": 0.0, "sft_weight": 0.5,
              "save_every": 0, "epochs": 1}
    if on_policy:  # 4 images x 4 answers a round in all; an optimizer step takes 4 answer pairs
        values.update({"data": tiny_world, "fisao.verifier": tiny_base / "clip", "fisao.calibration": calibration,
                       "fisao.rounds": 1, "fisao.samples": 4, "fisao.prompts_per_round": 4 // processes,
                       "fisao.epochs": 1 if method == "fisao" else 2, "fisao.max_new_tokens": 24,
                       "fisao.kl_coef": 0.0, "fisao.sample_batch": 1,
                       "batch_size": 8 if processes == 1 else 2, "grad_accum": 1 if processes == 1 else 2})
    else:  # 8 records: 2 steps an epoch
        values.update({"data": tiny_prefs, "batch_size": 4 if processes == 1 else 1,
                       "grad_accum": 1 if processes == 1 else 2})
    return [f"{k}={v}" for k, v in values.items()]


def one_process(pairs: list[str], out: Path) -> None:
    train(load_config(TrainConfig, overrides=[*pairs, f"out={out}"]))


def as_args(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def logged_steps(out: Path) -> list[int]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if "loss" in r]


def weights(out: Path) -> dict[str, torch.Tensor]:
    files = sorted((out / "model").glob("*.safetensors"))
    assert files, f"{out}/model has no weights"
    return {k: v for f in files for k, v in load_file(str(f)).items()}


def assert_same_weights(two: Path, one: Path) -> float:
    """Equal within 1e-5: under 1% of the runs' updates (the largest weight moved 1.5e-3 in two
    steps), where ranks that never all-reduce end 8e-3 apart; sums in another order move Adam's
    steps by about 1e-6."""
    mine, reference = weights(two), weights(one)
    assert mine.keys() == reference.keys() and mine
    for name in mine:
        torch.testing.assert_close(mine[name], reference[name], rtol=0, atol=1e-5, msg=name)
    largest = max((mine[k] - reference[k]).abs().max().item() for k in mine)
    print(f"largest weight difference, 2 processes against 1: {largest:.2e}")
    return largest


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, tiny_world, tiny_base, tiny_prefs,
                                                             calibration, method):
    proc = launch(as_args(settings(method, 2, tiny_world, tiny_base, tiny_prefs, calibration)), tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one_process(settings(method, 1, tiny_world, tiny_base, tiny_prefs, calibration), tmp_path / "one")
    # one line per step however many processes, and epochs mean epochs
    assert logged_steps(tmp_path / "two") == logged_steps(tmp_path / "one") == [1, 2]
    start = load_file(str(tiny_base / "llava" / "model.safetensors"))
    trained = weights(tmp_path / "one")
    assert max((trained[k] - start[k]).abs().max().item() for k in trained if k in start) > 1e-4
    assert_same_weights(tmp_path / "two", tmp_path / "one")


def test_lora_over_two_processes_equals_one(tmp_path, tiny_world, tiny_base, tiny_prefs, calibration):
    lora = ["lora.enabled=true", "lora.r=4", "lr=1e-2"]
    pairs = settings("dpo", 2, tiny_world, tiny_base, tiny_prefs, calibration) + lora
    proc = launch(as_args(pairs), tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one_process(settings("dpo", 1, tiny_world, tiny_base, tiny_prefs, calibration) + lora, tmp_path / "one")
    assert (tmp_path / "two" / "model" / "adapter_config.json").is_file()
    assert_same_weights(tmp_path / "two", tmp_path / "one")


def workers_of(out: Path) -> list[int]:
    """Processes whose command line names ``out`` (the launcher's workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(out).encode() in cmdline and int(proc.name) != os.getpid():
                found.append(int(proc.name))
    return found


def test_a_killed_launcher_stops_its_workers_and_the_run_resumes(tmp_path, tiny_world, tiny_base, tiny_prefs,
                                                                  calibration):
    # long enough that it is still running when the launcher is killed, just after step 2's checkpoint
    pairs = [p for p in settings("dpo", 2, tiny_world, tiny_base, tiny_prefs, calibration) if not p.startswith(
        ("save_every", "epochs"))] + ["max_steps=30", "save_every=2"]
    out = tmp_path / "two"
    launcher = subprocess.Popen(launch_command(as_args(pairs), out), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "step-2").is_dir() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert launcher.poll() is None, "the run ended before it could be killed"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 30
    while workers_of(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = workers_of(out)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "the launcher's workers outlived it"
    assert (out / "checkpoints" / "step-2").is_dir() and not (out / "model").exists()

    proc = launch([*as_args(pairs), "--resume"], out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert logged_steps(out) == list(range(1, 31))
    one = [p for p in settings("dpo", 1, tiny_world, tiny_base, tiny_prefs, calibration) if not p.startswith(
        ("save_every", "epochs"))] + ["max_steps=30", "save_every=0"]
    one_process(one, tmp_path / "one")
    assert_same_weights(out, tmp_path / "one")


DEEPSPEED_ENV = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"} | {
    "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def deepspeed_command(args: list[str], out: Path, config: Path) -> list[str]:
    command = launch_command(args, out)
    at = command.index("--multi_gpu")
    return command[:at] + ["--use_deepspeed", "--deepspeed_config_file", str(config)] + command[at + 1:]


def stage_config(stage: int, tmp_path: Path) -> Path:
    ds = json.loads(launch_config(f"zero{stage}").read_text())
    if stage == 3:
        ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp_path / f"zero{stage}.json"
    path.write_text(json.dumps(ds))
    return path


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("method", ["dpo", "tpo"])
def test_zero_over_two_processes_equals_one(tmp_path, tiny_world, tiny_base, tiny_prefs, method, stage):
    pairs = [p for p in settings(method, 2, tiny_world, tiny_base, tiny_prefs, "") if not p.startswith("save_every")]
    pairs += ["save_every=1", "reference=copy"]
    out = tmp_path / f"zero{stage}"
    proc = subprocess.run(deepspeed_command(as_args(pairs), out, stage_config(stage, tmp_path)), capture_output=True,
                          text=True, timeout=420, env=DEEPSPEED_ENV, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # DeepSpeed really ran: its own checkpoint of the partitions, marked with the stage
    state = json.loads((out / "checkpoints" / "step-1" / "state.json").read_text())
    assert state["engine"] == f"zero{stage}" and (out / "checkpoints" / "step-1" / "pytorch_model").is_dir()
    one_process([p for p in settings(method, 1, tiny_world, tiny_base, tiny_prefs, "")] + ["reference=copy"],
                tmp_path / "one")
    assert logged_steps(out) == logged_steps(tmp_path / "one") == [1, 2]
    assert_same_weights(out, tmp_path / "one")
    # the saved model is whole: it reloads with transformers, every tensor with its elements
    reloaded = AutoModelForImageTextToText.from_pretrained(out / "model").state_dict()
    base = AutoModelForImageTextToText.from_pretrained(tmp_path / "one" / "model").state_dict()
    assert reloaded.keys() == base.keys()
    for name, tensor in base.items():
        assert reloaded[name].numel() == tensor.numel() > 0
        torch.testing.assert_close(reloaded[name], tensor, rtol=0, atol=1e-5)
    if stage == 3 and method == "dpo":  # resumed from step 1's partitions: the same end
        whole = weights(out)
        shutil.rmtree(out / "checkpoints" / "step-2")
        shutil.rmtree(out / "model")
        proc = subprocess.run(deepspeed_command([*as_args(pairs), "--resume"], out, stage_config(stage, tmp_path)),
                              capture_output=True, text=True, timeout=420, env=DEEPSPEED_ENV, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert logged_steps(out) == [1, 2]
        for name, tensor in weights(out).items():
            torch.testing.assert_close(tensor, whole[name], rtol=0, atol=1e-7)


FSDP_ON_CPU = Path(__file__).with_name("fsdp_on_cpu.py")


def fsdp2_command(args: list[str], out: Path) -> list[str]:
    """The shipped FSDP2 config, two CPU processes, vlalign run through :mod:`fsdp_on_cpu` (Accelerate
    enables FSDP on GPUs only; that script lifts this one gate)."""
    command = launch_command(args, out)
    at = command.index("--multi_gpu")
    module = command.index("-m")
    return (command[:at] + ["--config_file", str(launch_config("fsdp2"))] + command[at + 1:module]
            + [str(FSDP_ON_CPU)] + command[module + 2:])


@pytest.mark.parametrize("method", ["dpo", "tpo", "fisao"])
def test_fsdp2_over_two_processes_equals_one(tmp_path, tiny_world, tiny_base, tiny_prefs, calibration, method):
    pairs = [p for p in settings(method, 2, tiny_world, tiny_base, tiny_prefs, calibration)
             if not p.startswith("save_every")] + ["save_every=1", "reference=copy"]
    out = tmp_path / "fsdp2"
    proc = subprocess.run(fsdp2_command(as_args(pairs), out), capture_output=True, text=True, timeout=420, env=ENV,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # FSDP2 really ran: its checkpoint holds one shard file per process, marked with the engine
    step_1 = out / "checkpoints" / "step-1"
    assert json.loads((step_1 / "state.json").read_text())["engine"] == "fsdp2"
    assert sorted(p.name for p in (step_1 / "pytorch_model_fsdp_0").glob("*.distcp")) == ["__0_0.distcp",
                                                                                          "__1_0.distcp"]
    one_process(settings(method, 1, tiny_world, tiny_base, tiny_prefs, calibration) + ["reference=copy"],
                tmp_path / "one")
    assert logged_steps(out) == logged_steps(tmp_path / "one") == [1, 2]
    assert_same_weights(out, tmp_path / "one")
    reloaded = AutoModelForImageTextToText.from_pretrained(out / "model").state_dict()
    assert all(tensor.numel() > 0 for tensor in reloaded.values())
    if method == "dpo":  # resumed from step 1's shards: the same end
        whole = weights(out)
        shutil.rmtree(out / "checkpoints" / "step-2")
        shutil.rmtree(out / "model")
        proc = subprocess.run(fsdp2_command([*as_args(pairs), "--resume"], out), capture_output=True, text=True,
                              timeout=420, env=ENV, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert logged_steps(out) == [1, 2]
        for name, tensor in weights(out).items():
            torch.testing.assert_close(tensor, whole[name], rtol=0, atol=1e-7)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
def test_fisao_samples_under_zero3_as_one_process_does(tmp_path, tiny_world, tiny_base, tiny_prefs, calibration):
    # generation with partitioned weights: every process makes the same generate calls, and the
    # verifier loads whole beside the partitioned policy
    pairs = settings("fisao", 2, tiny_world, tiny_base, tiny_prefs, calibration)
    out = tmp_path / "zero3"
    proc = subprocess.run(deepspeed_command(as_args(pairs), out, stage_config(3, tmp_path)), capture_output=True,
                          text=True, timeout=420, env=DEEPSPEED_ENV, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one_process(settings("fisao", 1, tiny_world, tiny_base, tiny_prefs, calibration), tmp_path / "one")
    assert logged_steps(out) == logged_steps(tmp_path / "one") == [1, 2]
    assert_same_weights(out, tmp_path / "one")

    def answers(run: Path) -> list[str]:
        rollout = json.loads((run / "rollouts" / "round-0000" / "rollout.json").read_text())
        return [a["answer"] for a in rollout["answers"]]
    assert len(answers(out)) == 16 and answers(out) == answers(tmp_path / "one")
