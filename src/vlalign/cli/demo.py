"""``vlalign demo``: its arguments, and progress bars for stages that may run side by side.

The work is :func:`vlalign.demo.run_demo`'s.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from vlalign.cli.common import quiet_transformers

DEFAULT_RUN = "runs/demo"


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from vlalign.demo import DEMO_METHODS, DemoConfig, run_demo
    from vlalign.report import load_run, markdown_table, summarize, write_report

    train_sets: dict[str, list[str]] = {}
    for item in args.train_set:
        method, sep, setting = item.partition(":")
        for m in ([method] if sep else DEMO_METHODS):
            train_sets.setdefault(m, []).append(setting if sep else item)
    extra = {"eval_images": args.eval_images} if args.eval_images else {}
    preset = "quick" if args.quick else "full" if args.full else "standard"
    config = DemoConfig.from_preset(preset, methods=args.methods.split(","), seeds=list(range(args.seeds)),
                               world=args.world_set, pretrain=args.pretrain_set, train=train_sets,
                               workers=args.workers, jobs=args.jobs, **extra)
    quiet_transformers()
    bars: dict = {}  # one bar per part of a stage; parallel method runs each have theirs
    run_of = re.compile(r"^(?:train|eval) (\S+)")

    def run_name(label: str) -> str | None:
        found = run_of.match(label)
        return found.group(1) if found else None

    def progress(label: str, done: int, total: int) -> None:
        owner = run_name(label)
        for other in [k for k in bars if k != label and (owner is None or run_name(k) == owner)]:
            bars.pop(other).close()  # the same run (or the one sequential stage) moved on
        if label not in bars:
            bars[label] = tqdm(total=total, desc=label, dynamic_ncols=True, leave=False)
        bars[label].total = total
        bars[label].update(done - bars[label].n)

    def on_stage(name: str, reused: bool) -> None:
        if config.jobs == 1 or not run_of.match(name):
            for label in list(bars):
                bars.pop(label).close()
        tqdm.write(f"{'reusing' if reused else 'running'} {name}", file=sys.stderr)

    summary = run_demo(args.out, config, progress, on_stage)
    for label in list(bars):
        bars.pop(label).close()
    report = write_report(args.out)
    print(f"\n{config.preset} demo: {len(config.seeds)} seed(s), test split, {config.eval_images} images "
          f"(CHAIR: greedy 'Describe this image.'; POPE: Yes/No next-token scores)\n")
    print(markdown_table(summarize(load_run(args.out))))
    print(f"\nreport: {report}\nrun directory: {args.out} ({summary['wall_seconds'] / 60:.1f} min of wall clock, "
          f"stages {summary['total_seconds'] / 60:.1f} min in all; a rerun reuses every finished stage)")
    return 0


def add_parser(sub) -> None:
    """The ``demo`` subcommand, on the ``vlalign`` parser's subparsers."""
    demo = sub.add_parser("demo", help="world, base model, every method, CHAIR and POPE, a report; reuses what exists")
    demo.add_argument("--out", default=DEFAULT_RUN, help="run directory (default: runs/demo)")
    size = demo.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smaller world and shorter runs: under 10 minutes on "
                      "2 cores (stated in the report); the default is under 30")
    size.add_argument("--full", action="store_true", help="the world recipes unchanged, as bench/effect.py "
                      "runs them (over an hour on 2 cores)")
    demo.add_argument("--methods", default="dpo,povid,tpo,fisao", help="comma-separated subset of dpo,povid,tpo,fisao")
    demo.add_argument("--seeds", type=int, default=1, help="train each method this many times (seeds 0..N-1)")
    demo.add_argument("--eval-images", type=int, default=0, help="test images for CHAIR and POPE (default 500; "
                      "200 with --quick)")
    demo.add_argument("--world-set", action="append", default=[], metavar="KEY=VALUE", help="override a WorldConfig field")
    demo.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a PretrainConfig field")
    demo.add_argument("--train-set", action="append", default=[], metavar="[METHOD:]KEY=VALUE",
                      help="override a TrainConfig field of every method, or of one (dpo:max_steps=100)")
    demo.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rendering processes")
    demo.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                      help="method runs (train + eval) at a time, each a process with its share of the cores "
                           "(default: 2, or 1 on one core)")
    demo.set_defaults(func=cmd_demo)
