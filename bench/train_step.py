"""One DPO training step, vlalign against TRL's DPOTrainer; POVID stage 2 and TPO against vlalign's DPO.

    python bench/train_step.py [--model runs/base/llava] [--data runs/prefs/objects.jsonl]
                               [--batch-size 8] [--steps 20] [--warmup 3] [--threads 1]

Same model weights, the same first ``--batch-size`` pairs of ``--data``, fp32 on the CPU, full
fine-tuning of the language model, lm_head and projector (vision tower frozen) in both, a
frozen copy of the model as the reference, dropout off, beta 0.1, the same torch AdamW and lr,
gradient clipping at 1.0, no gradient checkpointing. A step is forward + backward + clip +
optimizer step on one already-collated batch (collation is timed separately); the median of
``--steps`` steps after ``--warmup`` is reported. Each framework runs in its own child process
(this script with ``--only``), so its peak RSS is its own: the peak over the whole child, and
the peak during the timed steps above the RSS just before them (the kernel's high-water mark is
reset there). All ratios come from this one run; the machine is noisy, so compare ratios.
Both run with ``--threads`` torch threads (default 1: on a shared machine, OpenMP threads that
wait for a busy core slow every op down by an order of magnitude; 0 keeps torch's default).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

MiB = 1024 * 1024
# What each child process runs, and its name in the table.
RUNS = {"vlalign": "vlalign DPO", "trl": "TRL DPOTrainer", "povid": "vlalign POVID stage 2", "tpo": "vlalign TPO",
        "tpo-detached": "vlalign TPO, detach_weights"}

def high_water() -> int:
    """Peak RSS (bytes) since start or since the last :func:`reset_high_water`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_high_water() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM (and ru_maxrss) := current RSS
        return True
    except OSError:
        return False


def timed_steps(step, warmup: int, steps: int) -> dict:
    """Run ``step()`` (returns the loss) warmup + steps times; times and memory of the timed ones."""
    first_loss = step()
    for _ in range(warmup - 1):
        step()
    before_peak, ready = high_water(), psutil.Process().memory_info().rss
    resettable = reset_high_water()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    during = high_water() if resettable else None
    peak = max(before_peak, high_water(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"median_s": statistics.median(times), "first_loss": first_loss, "peak_mib": peak / MiB,
            "ready_mib": ready / MiB, "steps_extra_mib": None if during is None else (during - ready) / MiB}


def optimizer_step(params, optimizer) -> None:
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_vlalign(args, method: str, detach: bool = False) -> dict:
    from vlalign.models.load import load_vlm
    from vlalign.train.config import TrainConfig
    from vlalign.train.data import load_pairs
    from vlalign.train.methods import corrupt_pixels, dpo_step, povid_step, tpo_step
    from vlalign.train.model import prepare_policy
    from vlalign.train.reference import make_reference

    config = TrainConfig(method=method, beta=args.beta, lr=args.lr, batch_size=args.batch_size, detach_weights=detach)
    pairs = load_pairs(args.data)
    rows = list(range(args.batch_size))
    vlm = load_vlm(args.model, dtype="float32", device="cpu")
    frozen = copy.deepcopy(vlm.model).eval().requires_grad_(False)
    policy = prepare_policy(vlm.model, config)
    reference = make_reference(config, policy, frozen, pairs, vlm, Path(args.model), "cpu")
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    started = time.perf_counter()
    batch, images = pairs.collate(vlm.processor, rows)
    collate_s = time.perf_counter() - started
    policy.train()
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        if method in ("povid", "tpo"):  # fresh noise every step, as the training loop does
            noisy = corrupt_pixels(vlm.processor, images, config.noise_step, config.noise_mode, generator)
            out = (povid_step if method == "povid" else tpo_step)(policy, reference, batch, rows, config, noisy)
        else:
            out = dpo_step(policy, reference, batch, rows, config)
        out.loss.backward()
        optimizer_step(params, optimizer)
        return out.loss.item()

    result = timed_steps(step, args.warmup, args.steps)
    return {**result, "collate_s": collate_s, "trainable": sum(p.numel() for p in params),
            "tokens": int(batch.attention_mask.sum()), "response_tokens": int(batch.response_mask.sum()),
            "shape": list(batch.input_ids.shape)}


def run_trl(args) -> dict:
    import trl
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from vlalign.models.load import load_vlm
    from vlalign.train.data import load_pairs

    pairs = load_pairs(args.data)
    rows = list(range(args.batch_size))
    vlm = load_vlm(args.model, dtype="float32", device="cpu")
    model = vlm.model
    model.model.vision_tower.requires_grad_(False)  # TRL trains everything it is given; match vlalign
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)  # what TRL would load from disk itself
    def text(t):
        return {"type": "text", "text": t}

    # TRL's conversational format, so that it applies the chat template itself
    dataset = Dataset.from_list([
        {"images": [image], "prompt": [{"role": "user", "content": [{"type": "image"}, text(r.prompt)]}],
         "chosen": [{"role": "assistant", "content": [text(r.chosen)]}],
         "rejected": [{"role": "assistant", "content": [text(r.rejected)]}]}
        for r, image in zip([pairs.records[r] for r in rows], pairs.images(rows))])
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(output_dir=out, per_device_train_batch_size=args.batch_size, max_length=None,
                           beta=args.beta, learning_rate=args.lr, weight_decay=0.0, optim="adamw_torch",
                           max_grad_norm=1.0, gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
                           report_to="none", eval_strategy="no", save_strategy="no", dataloader_num_workers=0,
                           disable_dropout=True, seed=0)
        trainer = DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=dataset,
                             processing_class=vlm.processor)
        optimizer = trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()'s loop, read by training_step
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        started = time.perf_counter()
        inputs = next(iter(trainer.get_train_dataloader()))
        collate_s = time.perf_counter() - started  # includes the dataloader's start

        def step() -> float:
            loss = trainer.training_step(trainer.model, dict(inputs))  # forward (policy + reference) + backward
            optimizer_step(params, optimizer)
            return loss.item()

        result = timed_steps(step, args.warmup, args.steps)
    return {**result, "collate_s": collate_s, "trainable": sum(p.numel() for p in params),
            "tokens": int(inputs["attention_mask"].sum()), "response_tokens": int(inputs["completion_mask"].sum()),
            "shape": list(inputs["input_ids"].shape), "version": trl.__version__,
            "optimizer": type(optimizer).__name__}


def child(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    method = {"vlalign": "dpo", "tpo-detached": "tpo"}.get(args.only, args.only)
    result = run_trl(args) if args.only == "trl" else run_vlalign(args, method, detach=args.only == "tpo-detached")
    print("RESULT " + json.dumps({**result, "threads": torch.get_num_threads()}))


def spawn(args, which: str) -> dict:
    cmd = [sys.executable, __file__, "--only", which, "--model", args.model, "--data", args.data,
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--lr", str(args.lr), "--beta", str(args.beta), "--threads", str(args.threads)]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
           "TQDM_DISABLE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"--only {which} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/base/llava")
    parser.add_argument("--data", default="runs/prefs/objects.jsonl", help="vlalign preference records (JSONL)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step (K)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child (0: torch's default)")
    parser.add_argument("--only", choices=list(RUNS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.warmup = max(1, args.warmup)
    if not Path(args.model, "config.json").is_file():
        sys.exit(f"{args.model}: no model there (train one with bench/pretrain.py or pass --model)")
    if not Path(args.data).is_file():
        sys.exit(f"{args.data}: no preference records; make them with\n"
                 f"    vlalign generate inject --data WORLD --out {args.data}")
    if args.only:
        return child(args)

    res = {}
    for which in RUNS:
        print(f"running {which} ...", file=sys.stderr, flush=True)
        res[which] = spawn(args, which)
    trl_r, ours = res["trl"], res["vlalign"]
    names = {**RUNS, "trl": f"TRL {trl_r['version']} DPOTrainer"}

    print("\n| framework | median s/step | tokens/s | peak RSS MiB | RSS before steps MiB | peak during steps "
          "above that MiB | time vs TRL | peak RSS vs TRL |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for which in RUNS:
        r = res[which]
        extra = "n/a" if r["steps_extra_mib"] is None else f"{r['steps_extra_mib']:.0f}"
        print(f"| {names[which]} | {r['median_s']:.4f} | {r['tokens'] / r['median_s']:.0f} | {r['peak_mib']:.0f} | "
              f"{r['ready_mib']:.0f} | {extra} | {r['median_s'] / trl_r['median_s']:.2f}x | "
              f"{r['peak_mib'] / trl_r['peak_mib']:.2f}x |")
    time_ratio, mem_ratio = ours["median_s"] / trl_r["median_s"], ours["peak_mib"] / trl_r["peak_mib"]
    print(f"\nvlalign DPO step / TRL DPO step: {time_ratio:.2f}x time (goal <= 0.60x: "
          f"{'met' if time_ratio <= 0.6 else 'NOT met'}), {mem_ratio:.2f}x peak RSS (goal <= 1.00x: "
          f"{'met' if mem_ratio <= 1.0 else 'NOT met'})")
    print(f"POVID stage-2 step / vlalign DPO step: {res['povid']['median_s'] / ours['median_s']:.2f}x time "
          f"(includes corrupting the {args.batch_size} images each step)")
    tpo_ratio = res["tpo"]["median_s"] / ours["median_s"]
    print(f"TPO step / vlalign DPO step: {tpo_ratio:.2f}x time (goal <= 1.40x: {'met' if tpo_ratio <= 1.4 else 'NOT met'}; "
          "policy and reference each score both answers with the clean and the corrupted image, so with "
          "gradients through c the policy's forward and backward run on twice the sequences: 2x DPO's FLOPs)")
    print(f"TPO step with detach_weights / vlalign DPO step: {res['tpo-detached']['median_s'] / ours['median_s']:.2f}x "
          "time (the policy's corrupted pass without a graph: 1.5x DPO's FLOPs)")
    print("\nsanity checks (policy == reference at step 1, so the DPO loss should be log 2 = 0.6931):")
    for which in RUNS:
        r = res[which]
        print(f"- {names[which]}: first loss {r['first_loss']:.4f}, trainable params {r['trainable']:,}, "
              f"batch {r['shape'][0]}x{r['shape'][1]} ids, {r['tokens']} real tokens, {r['response_tokens']} "
              f"response tokens, collation {r['collate_s']:.3f} s")
    print(f"\nsettings: model {args.model}, data {args.data}, {args.batch_size} pairs/step, {args.warmup} warmup + "
          f"{args.steps} timed steps, fp32 CPU, {ours['threads']} torch threads, beta {args.beta}, lr {args.lr}, "
          f"torch AdamW (TRL: {trl_r['optimizer']}, optim=adamw_torch), clip 1.0, reference = frozen copy, "
          f"dropout off, no gradient checkpointing, vision tower frozen, TRL max_length=None; "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
