"""Cost of the preflight pass (``vlalign train``'s, ``vlalign data validate --model``'s) on many records.

    python bench/preflight.py [--records 100000] [--small 10000] [--images 8] [--dir runs/bench_preflight]

Writes a JSON Lines file of ``--records`` preference records over ``--images`` small PNGs (64x64,
shared by the records, as real sets share images), one of its first ``--small`` records, and a
tiny LLaVA model's directory (:func:`vlalign.models.tiny_families.build_tiny`: its config and
processor are all the preflight reads). Then runs the preflight on each file in a fresh process and
prints its time per 10,000 records and the process's peak RSS (``ru_maxrss``) before and after: the
two files' peaks should be close when the pass streams.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def build(root: Path, records: int, small: int, images: int) -> None:
    from PIL import Image

    from vlalign.models.tiny_families import build_tiny

    root.mkdir(parents=True, exist_ok=True)
    for k in range(images):
        Image.new("RGB", (64, 64), (k * 30 % 256, 90, 200 - k * 20 % 200)).save(root / f"img{k}.png")
    with (root / "big.jsonl").open("w") as big, (root / "small.jsonl").open("w") as little:
        for k in range(records):
            line = json.dumps({"id": f"r{k}", "image": f"img{k % images}.png",
                               "prompt": f"What is in image {k}? Describe it in detail.",
                               "chosen": f"The image {k} shows a cup on a table next to a window. " * 3,
                               "rejected": f"The image {k} shows a dog on a sofa next to a cat. " * 3}) + "\n"
            big.write(line)
            if k < small:
                little.write(line)
    model, processor = build_tiny("llava_next")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")


def measure(data: Path, model: Path) -> dict:
    from vlalign.data.preflight import check_pairs, model_limits

    before = _peak_mb()
    limits = model_limits(model)
    started = time.perf_counter()
    found = check_pairs(data, limits)
    seconds = time.perf_counter() - started
    return {"records": found.records, "images": found.images, "problems": len(found.problems),
            "longest": found.longest[0], "seconds": seconds, "per_10k_s": seconds / found.records * 10_000,
            "rss_before_mb": before, "rss_peak_mb": _peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--dir", default="runs/bench_preflight")
    parser.add_argument("--measure", nargs=2, metavar=("DATA", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), Path(args.measure[1]))))
        return
    root = Path(args.dir)
    started = time.perf_counter()
    build(root, args.records, args.small, args.images)
    print(f"built {args.records:,} and {args.small:,} records over {args.images} images in "
          f"{time.perf_counter() - started:.1f} s ({root})")
    for name in ("small", "big"):
        done = subprocess.run([sys.executable, __file__, "--measure", str(root / f"{name}.jsonl"), str(root / "model")],
                              capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{r['records']:>7,} records, {r['images']} images, longest {r['longest']} tokens: "
              f"{r['seconds']:.1f} s, {r['per_10k_s']:.2f} s per 10k records; peak RSS {r['rss_peak_mb']:.0f} MB "
              f"({r['rss_before_mb']:.0f} MB before the pass)")


if __name__ == "__main__":
    main()
