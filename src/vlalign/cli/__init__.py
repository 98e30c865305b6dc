"""The ``vlalign`` command. Each subcommand parses its arguments and calls the library.

A module of this package holds one command (or one group: ``world``, ``eval``, ``data``, ...)
and adds it to the parser with ``add_parser(subparsers)``. A user's mistake
(:class:`~vlalign.errors.UserError`) is printed as one line on stderr with exit code 2;
Ctrl-C exits with 130 and leaves no partial output (the library writes atomically).
"""

from __future__ import annotations

import argparse
import sys

from vlalign import __version__
from vlalign.cli import data, demo, eval, generate, inspect, recipes, report, train, world
from vlalign.errors import UserError

__all__ = ["build_parser", "main"]

#: The command groups, in the order ``vlalign --help`` lists them.
COMMANDS = (world, eval, data, generate, train, inspect, recipes, demo, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlalign", description="Preference alignment against VLM hallucination.")
    parser.add_argument("--version", action="version", version=f"vlalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
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
