"""The ``vlalign`` command. Each subcommand parses its arguments and calls the library.

A user's mistake (:class:`~vlalign.errors.UserError`) is printed as one line on stderr with
exit code 2; Ctrl-C exits with 130 and leaves no partial output (the library writes
atomically).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from vlalign import __version__
from vlalign.errors import UserError
from vlalign.io import check_output_dir

DEFAULT_RUN = Path("runs/demo")


def _progress(desc: str, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=True)


def _step_bars():
    """An ``on_step`` callback drawing one progress bar per training stage."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def on_step(stage: str, step: int, total: int, metrics: dict[str, float]) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"pretrain {stage}", unit="step", dynamic_ncols=True)
        bar.update(step - bar.n)
        bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
        if step >= total:
            bar.close()

    return on_step


def _quiet_transformers() -> None:
    # Saving and loading print their own shard bars; vlalign draws one bar per stage instead.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def cmd_world_make(args: argparse.Namespace) -> int:
    from vlalign.config import load_config
    from vlalign.world.make import make_world
    from vlalign.world.scenes import WorldConfig

    config = load_config(WorldConfig, args.config, args.set)
    config.validate()
    check_output_dir(args.out, args.overwrite)  # before the progress bar: an error is one line
    total = config.num_train + config.num_val + config.num_test
    started = time.perf_counter()
    with _progress("world make", total) as bar:
        make_world(config, args.out, overwrite=args.overwrite, workers=args.workers, progress=bar.update)
    print(f"world written to {args.out}: {config.num_train} train, {config.num_val} val, {config.num_test} test "
          f"images in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_world_pretrain(args: argparse.Namespace) -> int:
    from vlalign.config import load_config
    from vlalign.world.pretrain import PretrainConfig, pretrain

    config = load_config(PretrainConfig, args.config, args.set)
    _quiet_transformers()
    summary = pretrain(args.world, args.out, config, overwrite=args.overwrite, on_step=_step_bars())
    print(f"base models written to {args.out}: clip/ ({summary['clip_parameters']:,} parameters), "
          f"llava/ ({summary['llava_parameters']:,} parameters) in {summary['total_seconds']:.0f}s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vlalign.config import load_config
    from vlalign.world.make import make_world
    from vlalign.world.pretrain import PretrainConfig, pretrain
    from vlalign.world.scenes import WorldConfig

    _quiet_transformers()
    run = Path(args.out)
    world_dir, base_dir = run / "world", run / "base"
    world_config = load_config(WorldConfig, None, args.world_set)
    if (world_dir / "world.json").is_file():
        print(f"reusing world {world_dir}")
    else:
        total = world_config.num_train + world_config.num_val + world_config.num_test
        with _progress("world make", total) as bar:
            make_world(world_config, world_dir, overwrite=True, workers=args.workers, progress=bar.update)
    if (base_dir / "pretrain.json").is_file():
        print(f"reusing base models {base_dir}")
    else:
        pretrain(world_dir, base_dir, load_config(PretrainConfig, None, args.pretrain_set),
                 overwrite=True, on_step=_step_bars())
    from vlalign.world.probe import describe_probe

    report = describe_probe(base_dir / "llava", world_dir, split="test", num_images=args.probe_images)
    print(f"\nbase model on {report['num_images']} unseen test images (greedy, 'Describe this image.'):")
    print(f"  mentions per description: {report['mentions_per_caption']:.2f}")
    print(f"  present objects named (recall): {100 * report['recall']:.1f}%")
    print(f"  mentions of absent objects (hallucination rate): {100 * report['hallucination_rate']:.1f}%")
    print(f"  of those, objects usual in the scene: {100 * report['hallucinations_in_scene']:.1f}%")
    for example in report["examples"][:3]:
        print(f"\n  image {example['image']} ({example['scene']}; present: {', '.join(example['present'])})")
        print(f"  -> {example['caption']}")
    print(f"\nworld: {world_dir}\nbase models: {base_dir}/llava (VLM), {base_dir}/clip (verifier)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlalign", description="Preference alignment against VLM hallucination.")
    parser.add_argument("--version", action="version", version=f"vlalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help="the synthetic world: make it, pretrain its base models")
    world_sub = world.add_subparsers(dest="world_command", required=True)
    make = world_sub.add_parser("make", help="render a world (COCO-format annotations, LLaVA-format data)")
    make.add_argument("--out", required=True, help="directory to create")
    make.add_argument("--config", help="YAML file of WorldConfig fields (default: built-in defaults)")
    make.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    make.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    make.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rendering processes")
    make.set_defaults(func=cmd_world_make)

    pre = world_sub.add_parser("pretrain", help="train the base CLIP and LLaVA on a world")
    pre.add_argument("--world", required=True, help="directory made by `vlalign world make`")
    pre.add_argument("--out", required=True, help="directory to create (gets clip/ and llava/)")
    pre.add_argument("--config", help="YAML file of PretrainConfig fields")
    pre.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    pre.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    pre.set_defaults(func=cmd_world_pretrain)

    demo = sub.add_parser("demo", help="the whole pipeline on the synthetic world, reusing what exists")
    demo.add_argument("--out", default=str(DEFAULT_RUN), help="run directory (default: runs/demo)")
    demo.add_argument("--world-set", action="append", default=[], metavar="KEY=VALUE", help="override a WorldConfig field")
    demo.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a PretrainConfig field")
    demo.add_argument("--probe-images", type=int, default=100, help="test images the base model describes")
    demo.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rendering processes")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"vlalign: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlalign: interrupted; no partial output was kept", file=sys.stderr)
        return 130
