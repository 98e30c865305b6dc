"""``vlalign report``: one HTML page of a run, or any set of result files as one table."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlalign.errors import UserError


def cmd_report(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths]
    if len(paths) == 1 and paths[0].is_dir():
        return _run_page(paths[0], args)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"{', '.join(missing)}: no such run directory or result file")
    if args.examples is not None:
        raise UserError("report: --examples is for a run directory's page, not for result files")
    from vlalign.io import write_text
    from vlalign.report.results import compare_files

    table = compare_files(paths)
    if args.out:
        write_text(args.out, table + "\n")
    print(table)
    if args.out:
        print(f"\ntable written to {args.out}")
    return 0


def _run_page(run_dir: Path, args: argparse.Namespace) -> int:
    from vlalign.report import load_run, markdown_table, summarize, write_report

    path = write_report(run_dir, args.out, examples=6 if args.examples is None else args.examples)
    run = load_run(run_dir)
    summary = summarize(run)
    # A training run not yet evaluated has no table; its notes say what to run.
    print(markdown_table(summary) if summary else "\n".join(run.notes))
    print(f"\nreport written to {path}")
    return 0


def add_parser(sub) -> None:
    """Adds the command to the ``vlalign`` subparsers ``sub``."""
    rep = sub.add_parser("report", help="a run directory as one HTML page (table, plots, examples, settings), or "
                         "result files of any benchmarks side by side")
    rep.add_argument("paths", nargs="+", metavar="PATH",
                     help="a run directory made by `vlalign demo` or `vlalign train`, or result files written by "
                     "`vlalign eval ...` (any benchmark, any number)")
    rep.add_argument("--out", help="file to write: the HTML page (default RUN_DIR/report.html), or the Markdown "
                     "table of result files (default: printed only)")
    rep.add_argument("--examples", type=int, help="run page: test images shown with every model's description "
                     "(default 6)")
    rep.set_defaults(func=cmd_report)
