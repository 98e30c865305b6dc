"""Memory of ``vlalign data validate`` and ``convert`` against the number of rows: flat when they stream.

    python bench/data_stream.py [--rows 200000] [--small 20000] [--dir runs/bench_stream]

Builds a synthetic RLAIF-V-style Parquet dataset (``image`` as ``datasets``' Image struct with a
16x16 PNG drawn from a pool of 2,000, ``question``, ``chosen``, ``rejected``, ``ds_name``; row
groups of 1,000 rows) of ``--rows`` rows and one of its first ``--small`` rows, then runs each
operation on each twice, each time in a fresh process: once for its peak RSS (``ru_maxrss``) before
and after the operation and its time, once under ``tracemalloc`` for the Python heap's peak during
it (tracing slows the run and its own records inflate the RSS, hence the separate run); last, for
each operation, the ratio of the two sizes' RSS peaks. The operations: validate the Parquet file, convert
it to vlalign JSON Lines (images written out), convert it to Parquet, and convert that JSON
Lines file back to Parquet.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

OPERATIONS = ("validate", "to_jsonl", "to_parquet", "jsonl_to_parquet")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def build(path: Path, rows: int, small_path: Path, small: int) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    pool = []
    for k in range(2000):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (k % 256, k // 256 * 30 % 256, 99)).save(buffer, "PNG")
        pool.append(buffer.getvalue())
    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                  "chosen": datasets.Value("string"), "rejected": datasets.Value("string"),
                                  "ds_name": datasets.Value("string")})
    schema = features.arrow_schema
    with pq.ParquetWriter(str(path), schema) as big, pq.ParquetWriter(str(small_path), schema) as little:
        for start in range(0, rows, 1000):
            batch = [{"image": {"bytes": pool[k % len(pool)], "path": f"{k}.png"},
                      "question": f"What is in image {k}? Describe it in detail.",
                      "chosen": f"The image {k} shows a cup on a table next to a window. " * 3,
                      "rejected": f"The image {k} shows a dog on a sofa next to a cat. " * 3, "ds_name": "synthetic"}
                     for k in range(start, min(start + 1000, rows))]
            table = pa.Table.from_pylist(batch, schema=schema)
            big.write_table(table)
            if start < small:
                little.write_table(table)


def measure(operation: str, src: Path, dst: Path, trace: bool) -> dict:
    """One operation in this process: its RSS peaks and time, or (``trace``) its Python heap's peak."""
    import datasets  # noqa: F401  (imported by the Parquet writer; counted in the baseline too)
    import pyarrow.parquet  # noqa: F401

    from vlalign.data import conversion  # imported before the baseline: the libraries are not the data

    before = _peak_mb()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    if operation == "validate":
        found = conversion.validate_source(src)
    else:
        found = conversion.convert_source(src, dst, overwrite=True)
    seconds = time.perf_counter() - start
    if trace:
        return {"rows": found.rows, "heap_peak_mb": round(tracemalloc.get_traced_memory()[1] / 2**20, 1)}
    return {"operation": operation, "rows": found.rows, "bad": len(found.bad), "rss_before_mb": round(before, 1),
            "rss_peak_mb": round(_peak_mb(), 1), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--dir", default="runs/bench_stream")
    parser.add_argument("--measure", nargs=4, metavar=("OPERATION", "SRC", "DST", "TRACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        operation, src, dst, trace = args.measure
        print(json.dumps(measure(operation, Path(src), Path(dst), trace == "trace")))
        return
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    sizes = {args.small: root / f"rows{args.small}.parquet", args.rows: root / f"rows{args.rows}.parquet"}
    if not all(p.is_file() for p in sizes.values()):
        build(sizes[args.rows], args.rows, sizes[args.small], args.small)
    results: dict[tuple[str, int], dict] = {}
    for rows, src in sizes.items():
        jsonl = root / f"out{rows}.jsonl"
        plan = {"validate": (src, root / "unused"), "to_jsonl": (src, jsonl),
                "to_parquet": (src, root / f"out{rows}.parquet"), "jsonl_to_parquet": (jsonl, root / f"back{rows}.parquet")}
        for operation in OPERATIONS:
            for trace in ("plain", "trace"):
                cmd = [sys.executable, __file__, "--measure", operation, *map(str, plan[operation]), trace]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode:
                    raise SystemExit(proc.stderr[-2000:])
                results.setdefault((operation, rows), {}).update(json.loads(proc.stdout.splitlines()[-1]))
            print(json.dumps(results[operation, rows]))
    small, big = args.small, args.rows
    print(f"\n| operation | RSS peak {small} rows (MB) | RSS peak {big} rows (MB) | ratio | heap peak {small} / {big} (MB) "
          f"| time {small} / {big} (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for operation in OPERATIONS:
        a, b = results[operation, small], results[operation, big]
        print(f"| {operation} | {a['rss_peak_mb']} | {b['rss_peak_mb']} | {b['rss_peak_mb'] / a['rss_peak_mb']:.2f} "
              f"| {a['heap_peak_mb']} / {b['heap_peak_mb']} | {a['seconds']} / {b['seconds']} |")


if __name__ == "__main__":
    main()
