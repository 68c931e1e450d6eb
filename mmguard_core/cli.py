"""The `mmguard` command line.

Subcommands of the engine live here; other packages (the web service) add theirs
through the `mmguard.commands` entry-point group, so mmguard_core never imports them.
Each entry point is a callable `register(subparsers)` that adds its parsers and sets
`func` on them (func(args) -> exit code).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmguard", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from mmguard_core import cli_commands

    cli_commands.register(subparsers)
    for entry in entry_points(group="mmguard.commands"):
        entry.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback (outputs are moved into place only when whole)
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
