"""What alignment buys on the synthetic world: every method from the same base and data, several seeds.

    python bench/effect.py --world runs/world --base runs/base/llava --data runs/prefs/objects.jsonl \
        [--verifier runs/base/clip] [--out runs/effect] [--methods dpo,povid,tpo,tpo-detached,fisao,fisao-dpo] \
        [--seeds 0,1,2] [--parallel 2]

Each (method, seed) is `vlalign train --config world/{method} --set seed=S` (the shipped train recipe)
then `vlalign eval all` on the test split, run as the user would run them, ``--parallel`` at a
time with one torch thread each (two single-threaded runs use 2 cores better than one run with
two threads). Finished runs are reused, so an interrupted bench continues. ``tpo-detached`` is
the TPO recipe with ``tpo.detach_weights: true``. ``fisao`` and ``fisao-dpo`` use no preference
data: they sample answers about the world's train images and score them with ``--verifier``
(their reward baselines come from the world's val split). The table gives each method's mean
and standard deviation over seeds, and the change of CHAIR_i and Recall relative to the base
model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vlalign.methods import METHODS

RECIPES = {"dpo": ("world/dpo", []), "povid": ("world/povid", []), "tpo": ("world/tpo", []),
           "tpo-detached": ("world/tpo", ["tpo.detach_weights=true"]), "fisao": ("world/fisao", []),
           "fisao-dpo": ("world/fisao_dpo", [])}
SPLITS = ("random", "popular", "adversarial")


def evaluate(model: Path, world: str, out: Path, log) -> dict:
    if not out.is_file():
        cmd = [sys.executable, "-m", "vlalign", "eval", "all", "--model", str(model), "--data", world, "--out", str(out)]
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=_env())
    return json.loads(out.read_text())


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def train_and_evaluate(args, method: str, seed: int) -> tuple[dict, float]:
    run = Path(args.out) / f"{method}-seed{seed}"
    result = run / "eval_test.json"
    started = time.perf_counter()
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{run}.log", "a") as log:
        if not (run / "model").is_dir():
            recipe, sets = RECIPES[method]
            samples = not METHODS[method.removesuffix("-detached")].reads_pairs  # on-policy: prompts, not pairs
            inputs = (["--prompts", args.world, "--verifier", args.verifier] if samples
                      else ["--data", args.data])
            cmd = [sys.executable, "-m", "vlalign", "train", "--config", recipe, "--model",
                   args.base, *inputs, "--out", str(run), "--set", f"seed={seed}",
                   *[a for s in [*sets, *args.set] for a in ("--set", s)]]
            if run.exists():
                cmd.append("--resume")
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=_env())
        return evaluate(run / "model", args.world, result, log), time.perf_counter() - started


def metrics(data: dict) -> dict[str, float]:
    """The headline numbers of a `vlalign eval all` result file's JSON object."""
    found = {(r["benchmark"], r["subset"]): r["metrics"] for r in data["results"]}
    chair = found[("chair", None)]
    row = {"CHAIR_s": chair["chair_s"], "CHAIR_i": chair["chair_i"], "Recall": chair["recall"]}
    for split in SPLITS:
        row[f"F1 {split[:3]}"] = found[("pope", split)]["f1"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="runs/world")
    parser.add_argument("--base", default="runs/base/llava")
    parser.add_argument("--data", default="runs/prefs/objects.jsonl")
    parser.add_argument("--verifier", default="runs/base/clip", help="fisao's and fisao-dpo's verifier (a CLIPModel "
                        "directory)")
    parser.add_argument("--out", default="runs/effect")
    parser.add_argument("--methods", default="dpo,povid,tpo,tpo-detached,fisao,fisao-dpo")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    args = parser.parse_args()
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [m for m in methods if m not in RECIPES]
    if unknown:
        sys.exit(f"unknown method {unknown[0]!r}; choose from {', '.join(RECIPES)}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(Path(args.out) / "base.log", "a") as log:
        base = metrics(evaluate(Path(args.base), args.world, Path(args.out) / "base_eval_test.json", log))
    jobs = [(m, s) for m in methods for s in seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        done = list(pool.map(lambda job: train_and_evaluate(args, *job), jobs))
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for (method, _), (result, took) in zip(jobs, done):
        rows[method].append(metrics(result))
        seconds[method].append(took)
    columns = list(base)
    print(f"test split, {len(seeds)} seed(s) per method ({args.seeds}); mean ± std over seeds\n")
    print("| model | " + " | ".join(columns) + " | CHAIR_i vs base | Recall vs base |")
    print("|---|" + "---:|" * (len(columns) + 2))
    print("| base | " + " | ".join(f"{base[c]:.1f}" for c in columns) + " | | |")
    summary = {"base": base, "seeds": seeds, "methods": {}}
    for method in methods:
        mean = {c: statistics.mean(r[c] for r in rows[method]) for c in columns}
        std = {c: statistics.stdev(r[c] for r in rows[method]) if len(seeds) > 1 else 0.0 for c in columns}
        cells = " | ".join(f"{mean[c]:.1f} ± {std[c]:.1f}" for c in columns)
        d_chair = 100 * (mean["CHAIR_i"] / base["CHAIR_i"] - 1)
        recall = 100 * mean["Recall"] / base["Recall"]
        print(f"| {method} | {cells} | {d_chair:+.1f}% | {recall:.1f}% |")
        summary["methods"][method] = {"runs": rows[method], "mean": mean, "std": std, "seconds": seconds[method]}
    print("\nper run (CHAIR_s / CHAIR_i / Recall):")
    for method in methods:
        print(f"  {method}: " + ", ".join(f"{r['CHAIR_s']:.1f}/{r['CHAIR_i']:.1f}/{r['Recall']:.1f}" for r in rows[method]))
    (Path(args.out) / "effect.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
