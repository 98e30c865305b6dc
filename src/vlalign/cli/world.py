"""``vlalign world``: make a synthetic world, pretrain its base models."""

from __future__ import annotations

import argparse
import os
import time

from vlalign.cli.common import progress, quiet_transformers, recipe, step_bars
from vlalign.io import check_output_dir


def cmd_world_make(args: argparse.Namespace) -> int:
    from vlalign.config import load_config
    from vlalign.world.make import make_world
    from vlalign.world.scenes import WorldConfig

    config = load_config(WorldConfig, recipe(args.config, "world"), args.set)
    config.validate()
    check_output_dir(args.out, args.overwrite)  # before the progress bar: an error is one line
    total = config.num_train + config.num_val + config.num_test
    started = time.perf_counter()
    with progress("world make", total) as bar:
        make_world(config, args.out, overwrite=args.overwrite, workers=args.workers, progress=bar.update)
    print(f"world written to {args.out}: {config.num_train} train, {config.num_val} val, {config.num_test} test "
          f"images in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_world_align_patches(args: argparse.Namespace) -> int:
    from vlalign.config import load_config
    from vlalign.world.pretrain import PretrainConfig, add_patch_alignment

    config = load_config(PretrainConfig, recipe(args.config, "world"), args.set)
    quiet_transformers()
    summary = add_patch_alignment(args.world, args.base, config, on_step=step_bars())
    print(f"{args.base}/clip: {summary['config']['patch_align_steps']} patch alignment steps "
          f"in {summary['patch_align_seconds']:.0f}s")
    return 0


def cmd_world_pretrain(args: argparse.Namespace) -> int:
    from vlalign.config import load_config
    from vlalign.world.pretrain import PretrainConfig, pretrain

    config = load_config(PretrainConfig, recipe(args.config, "world"), args.set)
    quiet_transformers()
    summary = pretrain(args.world, args.out, config, overwrite=args.overwrite, on_step=step_bars())
    print(f"base models written to {args.out}: clip/ ({summary['clip_parameters']:,} parameters), "
          f"llava/ ({summary['llava_parameters']:,} parameters) in {summary['total_seconds']:.0f}s")
    return 0


def cmd_world_export(args: argparse.Namespace) -> int:
    from vlalign.world.amber_export import export_amber

    summary = export_amber(args.world, args.out, split=args.split, overwrite=args.overwrite)
    counts = ", ".join(f"{n} {kind}" for kind, n in summary["counts"].items())
    print(f"AMBER files for the {args.split} split written to {args.out}: {counts}\n"
          f"score responses with `vlalign eval amber --amber-dir {args.out} --responses FILE`")
    return 0


def add_parser(sub) -> None:
    """Adds the command to the ``vlalign`` subparsers ``sub``."""
    world = sub.add_parser("world", help="the synthetic world: make it, pretrain its base models, export it")
    world_sub = world.add_subparsers(dest="world_command", required=True)
    make = world_sub.add_parser("make", help="render a world (COCO-format annotations, LLaVA-format data)")
    make.add_argument("--out", required=True, help="directory to create")
    make.add_argument("--config", help="WorldConfig fields: a recipe name (vlalign recipes) or a YAML file "
                      "(default: built-in defaults)")
    make.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    make.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    make.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rendering processes")
    make.set_defaults(func=cmd_world_make)

    pre = world_sub.add_parser("pretrain", help="train the base CLIP and LLaVA on a world")
    pre.add_argument("--world", required=True, help="directory made by `vlalign world make`")
    pre.add_argument("--out", required=True, help="directory to create (gets clip/ and llava/)")
    pre.add_argument("--config", help="PretrainConfig fields: a recipe name (vlalign recipes) or a YAML file")
    pre.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    pre.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    pre.set_defaults(func=cmd_world_pretrain)

    align = world_sub.add_parser("align-patches", help="add the patch alignment stage to a base pretrained without it")
    align.add_argument("--world", required=True, help="the world the base was pretrained on")
    align.add_argument("--base", required=True, help="directory made by `vlalign world pretrain` (clip/ is replaced)")
    align.add_argument("--config", help="PretrainConfig fields: a recipe name (vlalign recipes) or a YAML file; "
                       "only patch_align_* and threads are read")
    align.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    align.set_defaults(func=cmd_world_align_patches)

    export = world_sub.add_parser("export", help="write a world's split in a benchmark's own file format")
    export.add_argument("--format", required=True, choices=("amber",), help="amber: AMBER's annotations, queries, "
                        "word lists and images (docs/eval_amber.md)")
    export.add_argument("--world", required=True, help="directory made by `vlalign world make`")
    export.add_argument("--out", required=True, help="directory to create")
    export.add_argument("--split", default="test", help="the world split to export (default test)")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.set_defaults(func=cmd_world_export)
