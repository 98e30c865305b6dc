"""Time and peak memory of `vlalign world make` + `vlalign world pretrain` on the default config,
then the base model's hallucination profile: CHAIR and POPE on the test split (unseen images,
scene priors broken) and CHAIR on seen training images.

    python bench/pretrain.py [--out runs/bench-pretrain] [--eval-images 500]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-pretrain")
    parser.add_argument("--eval-images", type=int, default=500)
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    vlalign = [sys.executable, "-m", "vlalign"]
    make_s = run([*vlalign, "world", "make", "--out", str(out / "world")])
    pretrain_s = run([*vlalign, "world", "pretrain", "--world", str(out / "world"), "--out", str(out / "base")])
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    from vlalign.eval.run import EvalConfig, evaluate, markdown_table

    model = out / "base" / "llava"
    test = evaluate(model, out / "world", "all", EvalConfig(split="test", num_images=args.eval_images))
    train = evaluate(model, out / "world", "chair", EvalConfig(split="train", num_images=args.eval_images))
    print("\n| stage | seconds |\n|---|---|")
    print(f"| world make | {make_s:.1f} |\n| world pretrain | {pretrain_s:.1f} |\n| total | {make_s + pretrain_s:.1f} |")
    print(f"\npeak memory of one child process: {peak_mib:.0f} MiB")
    print(f"\nbase model, test split ({args.eval_images} unseen images, priors broken), greedy:\n")
    print(markdown_table(test.results))
    print(f"\nbase model, train split ({args.eval_images} seen images), greedy:\n")
    print(markdown_table(train.results))
    for row in test.get("chair").items[:3]:
        print(f"\npresent: {', '.join(row['ground_truth'])}\n  -> {row['caption']}")
    (out / "bench.json").write_text(json.dumps({
        "make_seconds": make_s, "pretrain_seconds": pretrain_s, "peak_mib": peak_mib,
        "test_chair": test.get("chair").metrics, "train_chair": train.get("chair").metrics,
        "test_pope": {r.subset: r.metrics for r in test.results if r.benchmark == "pope"}}, indent=1))


if __name__ == "__main__":
    main()
