"""``vlalign eval rescore FILE``: another harness's saved answers, scored by vlalign and by the harness's rules."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlalign.errors import UserError

_DESCRIPTION = """Re-score an lmms-eval --log_samples file (*_samples_TASK.jsonl, or an older TASK.json) or a
VLMEvalKit prediction file (.tsv, .csv, .xlsx, .json) for POPE or CHAIR. Prints vlalign's numbers
and the harness's own (aggregated the way its code does) side by side, each with its parser or
normalizer; --out writes both, with their protocols and per-item records, as a vlalign result file."""


def cmd_rescore(args: argparse.Namespace) -> int:
    from vlalign.eval.interop import rescore, side_by_side
    from vlalign.eval.results import write_results

    if args.out and Path(args.out).is_dir():
        raise UserError(f"{args.out}: is a directory; --out takes a file name")
    context, results = rescore(args.file, harness=args.harness, benchmark=args.benchmark, pope_parser=args.pope_parser,
                               data=args.data, split=args.split, normalizer=args.normalizer,
                               coco_synonyms=args.coco_synonyms)
    print(side_by_side(results))
    if args.out:
        write_results(args.out, results, **context)
        print(f"\nresults, protocols and per-item records written to {args.out}")
    return 0


def add_parser(sub) -> None:
    """Adds ``rescore`` to the ``vlalign eval`` subparsers ``sub``."""
    from vlalign.text.normalize import NORMALIZERS  # light; vlalign.eval.interop is imported only to run

    text = "re-score an lmms-eval or VLMEvalKit output file (POPE, CHAIR) beside the harness's own numbers"
    p = sub.add_parser("rescore", help=text, description=_DESCRIPTION)
    p.add_argument("file", help="lmms-eval samples file or VLMEvalKit prediction file")
    p.add_argument("--harness", choices=("auto", "lmms-eval", "vlmevalkit"), default="auto",
                   help="which harness wrote FILE (default auto: by suffix and content)")
    p.add_argument("--benchmark", choices=("auto", "pope", "chair"), default="auto",
                   help="default auto: by the per-sample metric fields, else the task name")
    p.add_argument("--pope-parser", choices=("official", "strict"), default="official",
                   help="vlalign's POPE parser (default official: the POPE repository's evaluate.py)")
    p.add_argument("--data", help="CHAIR: a world or COCO directory whose annotations give the ground truth "
                   "(default: the log's gt_object lists)")
    p.add_argument("--split", default="test", help="CHAIR: the split of --data (default test; COCO: val2014)")
    p.add_argument("--normalizer", choices=tuple(dict.fromkeys(("auto", *NORMALIZERS))), default="auto",
                   help="CHAIR word normalizer (default auto: builtin on a world, the original script's lineage on COCO)")
    p.add_argument("--coco-synonyms", help="CHAIR's COCO synonyms.txt (default: $VLALIGN_COCO_SYNONYMS or "
                   "~/.cache/vlalign/coco_synonyms.txt)")
    p.add_argument("--out", help="write a vlalign result file (both scorers' results) here")
    p.set_defaults(func=cmd_rescore)
