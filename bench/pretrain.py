"""Time and peak memory of `vlalign world make` + `vlalign world pretrain` on the default config,
then how the base model describes unseen test images (recall and hallucinated mentions).

    python bench/pretrain.py [--out runs/bench-pretrain] [--probe-images 200]

The issue's budget is 8 minutes on 2 CPU cores for both commands together.
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
    parser.add_argument("--probe-images", type=int, default=200)
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    vlalign = [sys.executable, "-m", "vlalign"]
    make_s = run([*vlalign, "world", "make", "--out", str(out / "world")])
    pretrain_s = run([*vlalign, "world", "pretrain", "--world", str(out / "world"), "--out", str(out / "base")])
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    from vlalign.world.probe import describe_probe

    probe = describe_probe(out / "base" / "llava", out / "world", split="test", num_images=args.probe_images)
    train_probe = describe_probe(out / "base" / "llava", out / "world", split="train", num_images=args.probe_images)
    print("\n| stage | seconds |\n|---|---|")
    print(f"| world make | {make_s:.1f} |\n| world pretrain | {pretrain_s:.1f} |\n| total | {make_s + pretrain_s:.1f} |")
    print(f"\npeak memory of one child process: {peak_mib:.0f} MiB (budget: 480 s total)")
    print("\n| split | images | mentions/desc | recall | hallucinated mentions | desc. with a hallucination | of those in-scene |")
    print("|---|---|---|---|---|---|---|")
    for split, p in (("train (seen)", train_probe), ("test (unseen, priors broken)", probe)):
        print(f"| {split} | {p['num_images']} | {p['mentions_per_caption']:.2f} | {100 * p['recall']:.1f}% | "
              f"{100 * p['hallucination_rate']:.1f}% | {100 * p['captions_with_hallucination']:.1f}% | "
              f"{100 * p['hallucinations_in_scene']:.1f}% |")
    for example in probe["examples"][:3]:
        print(f"\n{example['scene']}, present: {', '.join(example['present'])}\n  -> {example['caption']}")
    (out / "bench.json").write_text(json.dumps({"make_seconds": make_s, "pretrain_seconds": pretrain_s,
                                                "peak_mib": peak_mib, "probe_test": {k: v for k, v in probe.items() if k != "examples"},
                                                "probe_train": {k: v for k, v in train_probe.items() if k != "examples"}}, indent=1))


if __name__ == "__main__":
    main()
