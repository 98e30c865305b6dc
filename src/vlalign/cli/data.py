"""``vlalign data``: preference data between formats and sources (``convert``), checked row by row (``validate``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlalign.errors import UserError

_SOURCE_HELP = ("preference data: a JSON Lines file, a Parquet or Arrow file, a directory of Parquet files, a "
                "save_to_disk directory, or a Hub id owner/name (where the Hub is reachable)")


def _print_bad(bad, prefix: str = "") -> None:
    for problem in bad:  # every bad row, one line each; the caller's last line sums up
        print(f"vlalign: {prefix}{problem}", file=sys.stderr)


def raise_bad(bad, summary: str) -> None:
    """Every problem in ``bad`` on its own line, then ``summary`` as the UserError (exit 2)."""
    _print_bad(bad)
    raise UserError(summary)


class preflight_progress:  # noqa: N801 - used as a function: the preflight's progress callback
    """Draws the preflight's progress (records checked, per input) on stderr and prints its summary line when it
    ends; silent when ``show`` is false (a launcher's other processes)."""

    def __init__(self, show: bool = True):
        self.show, self.bar = show, None

    def __call__(self, found, label: str) -> None:
        if not self.show:
            return
        if not label:  # every input done
            self.close()
            print(found.summary())
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc="preflight", unit="record", dynamic_ncols=True, leave=False, delay=1)
        self.bar.set_postfix_str(str(label), refresh=False)
        self.bar.update(found.records - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _skipped(skipped) -> str:
    return "".join(f", {n} without a pair ({why})" for why, n in sorted(skipped.items()))


def cmd_data_convert(args: argparse.Namespace) -> int:
    from vlalign.data.conversion import convert_source
    from vlalign.data.records import BadRecordsError
    from vlalign.io import write_json

    try:
        found = convert_source(args.src, args.dst, fmt=args.input_format, to=args.to, split=args.split,
                               image_root=args.image_root, images_dir=args.images_dir,
                               check_images=not args.no_check_images, on_bad=args.on_bad, overwrite=args.overwrite)
    except BadRecordsError as err:
        raise_bad(err.bad, f"{len(err.bad)} bad record(s) in {args.src}; nothing written "
                  "(--on-bad skip writes the good ones and reports the rest)")
    report = Path(f"{args.dst}.report.json")
    write_json(report, found.to_json(), indent=1)
    _print_bad(found.bad, "skipped ")
    images = f"; {found.images} images written to {found.images_dir}" if found.images_dir else ""
    fmt = args.to or ("parquet" if Path(args.dst).suffix.lower() == ".parquet" else "vlalign")
    print(f"{found.written} records written to {args.dst} ({fmt} format), {len(found.bad)} bad records skipped"
          f"{_skipped(found.skipped)}{images}; report: {report}")
    return 0


def _preflight(args: argparse.Namespace) -> int:
    """``data validate --model``: the preflight of ``vlalign train`` alone, on one source."""
    from vlalign.data.preflight import check_pairs, model_limits
    from vlalign.io import write_json

    limits = model_limits(args.model, max_length=args.max_length, max_pixels=args.max_pixels,
                          trust_remote_code=args.trust_remote_code)
    progress = preflight_progress()
    found = check_pairs(args.src, limits, image_root=args.image_root, fmt=args.input_format, split=args.split,
                        on_progress=progress)
    progress(found, "")
    if args.report:
        write_json(args.report, found.to_json(), indent=1)
    if found.problems:
        raise_bad(found.problems, f"{args.src}: {len(found.problems)} record(s) would stop vlalign train on "
                  f"{args.model}")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from vlalign.data.conversion import validate_source
    from vlalign.io import write_json

    if args.model:
        return _preflight(args)
    if args.max_length or args.max_pixels:
        raise UserError("data validate: --max-length and --max-pixels need --model (the lengths are the model's)")

    found = validate_source(args.src, fmt=args.input_format, split=args.split, image_root=args.image_root,
                            check_images=not args.no_check_images)
    if args.report:
        write_json(args.report, found.to_json(), indent=1)
    _print_bad(found.bad)
    summary = (f"{found.label}: {found.rows} rows, {found.ok} ok ({found.records} records), {len(found.bad)} bad"
               f"{_skipped(found.skipped)}")
    if found.bad:
        raise UserError(summary)
    print(summary)
    return 0


def _source_flags(parser: argparse.ArgumentParser) -> None:
    from vlalign.data.schemas import READ_FORMATS  # light: no table library is imported for the parser

    parser.add_argument("src", help=_SOURCE_HELP)
    parser.add_argument("--format", "--from", dest="input_format", choices=READ_FORMATS, default="auto",
                        help="the source's schema (default: detected row by row from its columns)")
    parser.add_argument("--split", default="train", help="the split of a DatasetDict, Parquet directory or Hub id "
                        "(default train)")
    parser.add_argument("--image-root", help="directory image paths are relative to (default: the file's or table's)")
    parser.add_argument("--no-check-images", action="store_true", help="do not check that images exist and are images")


def add_parser(sub) -> None:
    """Adds ``vlalign data`` (``convert``, ``validate``) to the ``vlalign`` subparsers ``sub``."""
    from vlalign.data.records import OUTPUTS

    data = sub.add_parser("data", help="preference data: convert between formats and sources, validate")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    conv = data_sub.add_parser("convert", help="convert preference data (any schema, JSON Lines or a table) to "
                               "vlalign/TRL/POVID JSON Lines or a Parquet dataset, checking every row")
    _source_flags(conv)
    conv.add_argument("dst", help="file to write (.parquet: a Parquet dataset with the images embedded)")
    conv.add_argument("--to", choices=OUTPUTS, help="output format (default: parquet for a .parquet DST, else vlalign)")
    conv.add_argument("--images-dir", help="where a table's embedded images are written (default: DST's stem + _images)")
    conv.add_argument("--overwrite", action="store_true", help="replace a non-empty --images-dir")
    conv.add_argument("--on-bad", choices=("error", "skip"), default="error",
                      help="bad records stop the conversion (default) or are skipped and reported")
    conv.set_defaults(func=cmd_data_convert)
    val = data_sub.add_parser("validate", help="check every row of preference data; exit 2 when any is bad")
    _source_flags(val)
    val.add_argument("--report", help="also write the per-row report (counts, every bad row) to this JSON file")
    val.add_argument("--model", help="also run vlalign train's preflight for this model (its processor and config "
                     "only, no weights): every image decodes, every row fits its positions and --max-length")
    val.add_argument("--max-length", type=int, default=0, help="with --model: train's max_length (0: no limit)")
    val.add_argument("--max-pixels", type=int, default=0, help="with --model: train's max_pixels (0: no bound)")
    val.add_argument("--trust-remote-code", action="store_true", help="with --model: allow its own Python code")
    val.set_defaults(func=cmd_data_validate)
