"""Where a FiSAO round's time goes: sampling, scoring (log-probs, verifier) and optimisation.

    python bench/fisao_round.py --world runs/world --base runs/base [--rounds 3] [--threads 1]
                                [--set key=value ...]

Runs ``vlalign train --config world/fisao`` for ``--rounds`` rounds on the
world's base model, then reads the run's ``metrics.jsonl``: per round, the seconds spent
sampling answers, scoring them (teacher-forced log-probs under the sampling policy and the
reference; the verifier), and in the optimiser steps. Then it times the first round's sampling
again, one prompt at a time with one answer per call, as CSR's released sampler does (FiSAO's
is not public), against vlalign's batched sampling of the same prompts, and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

RECIPE = "world/fisao"  # the shipped train recipe


def rounds_table(rows: list[dict]) -> list[dict[str, float]]:
    """Per round: its rollout's seconds (from the first step of the round) and its steps' seconds."""
    by_round: dict[int, list[dict]] = {}
    for row in rows:
        if "fisao/round" in row:
            by_round.setdefault(int(row["fisao/round"]), []).append(row)
    out = []
    for r, steps in sorted(by_round.items()):
        first = steps[0]
        rollout = first["fisao/sample_s"] + first["fisao/logps_s"] + first["fisao/verifier_s"]
        total = sum(s["step_s"] for s in steps)
        out.append({"round": r, "sample": first["fisao/sample_s"], "logps": first["fisao/logps_s"],
                    "verifier": first["fisao/verifier_s"], "optimise": total - rollout, "total": total,
                    "steps": len(steps), "answer_tokens": first["fisao/answer_tokens"]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="runs/world")
    parser.add_argument("--base", default="runs/base", help="directory with llava/ and clip/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from vlalign.config import load_config
    from vlalign.data.datasets import open_image
    from vlalign.methods.fisao import decoding_config, load_prompts
    from vlalign.models.generation import generate
    from vlalign.models.load import load_vlm
    from vlalign.recipes import resolve_recipe
    from vlalign.train.config import TrainConfig
    from vlalign.train.loop import train

    base = Path(args.base)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        paths = {"model": str(base / "llava"), "data": args.world, "out": str(out), "fisao.verifier": str(base / "clip")}
        config = load_config(TrainConfig, resolve_recipe(RECIPE, "train"), [f"fisao.rounds={args.rounds}", *args.set],
                             paths)
        started = time.perf_counter()
        train(config)
        wall = time.perf_counter() - started
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        first = json.loads((out / "rollouts" / "round-0000" / "rollout.json").read_text())
    table = rounds_table(rows)
    f = config.fisao
    print(f"FiSAO rounds on {base}: {f.prompts_per_round} images x {f.samples} answers, {f.epochs} epochs, "
          f"batch {config.batch_size}, {args.threads or 'default'} thread(s); whole run {wall:.1f} s "
          "(with the calibration)")
    print("| round | sample s | log-probs s | verifier s | optimise s | total s | steps | tokens/answer |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['round']} | {r['sample']:.2f} | {r['logps']:.2f} | {r['verifier']:.3f} | {r['optimise']:.2f} "
              f"| {r['total']:.2f} | {r['steps']} | {r['answer_tokens']:.1f} |")
    median = {k: statistics.median(r[k] for r in table) for k in ("sample", "logps", "verifier", "optimise", "total")}
    print("median share of a round: " + ", ".join(f"{k} {100 * median[k] / median['total']:.0f}%"
                                                 for k in ("sample", "logps", "verifier", "optimise")))

    # Sampling the first round's prompts again: batched (as the run does) vs one answer per call.
    prompts = load_prompts(args.world, "train", f.prompt)
    rows_used = first["prompt_rows"]
    images = [open_image(prompts[r].image) for r in rows_used for _ in range(f.samples)]
    questions = [prompts[r].prompt for r in rows_used for _ in range(f.samples)]
    vlm = load_vlm(base / "llava", dtype="float32", device="cpu")
    decoding = decoding_config(config, seed=0)
    times = {}
    for name, batch_size in (("batched", max(config.batch_size, f.samples)), ("one at a time", 1)):
        started = time.perf_counter()
        answers = generate(vlm, images, questions, decoding, batch_size=batch_size)
        times[name] = time.perf_counter() - started
        tokens = sum(len(vlm.processor.tokenizer(a).input_ids) for a in answers)
        print(f"sampling {len(answers)} answers {name}: {times[name]:.2f} s, {tokens / times[name]:.0f} tokens/s")
    print(f"batched sampling is {times['one at a time'] / times['batched']:.1f}x faster than one answer per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
