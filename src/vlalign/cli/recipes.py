"""``vlalign recipes``: the shipped recipes and launch configs."""

from __future__ import annotations

import argparse


def cmd_recipes(args: argparse.Namespace) -> int:
    from vlalign.recipes import launch_config, list_recipes

    recipes = [] if args.launch else list_recipes(args.kind)
    width = max((len(r.name) for r in recipes), default=0)
    print(launch_config(args.launch) if args.launch else "\n".join(f"{r.name:<{width}}  {r.command}" for r in recipes))
    return 0



def add_parser(sub) -> None:
    """Adds the command to the ``vlalign`` subparsers ``sub``."""
    rec = sub.add_parser("recipes", help="the shipped recipes (--config names): each one's name and its command")
    rec.add_argument("--kind", choices=("train", "world", "eval"), help="only this kind of recipes (default: all)")
    rec.add_argument("--launch", metavar="NAME", help="print the path of a shipped engine config: DeepSpeed's "
                     "zero2, zero3, zero3_offload (--deepspeed_config_file), FSDP2's fsdp2 (--config_file)")
    rec.set_defaults(func=cmd_recipes)
