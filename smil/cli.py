"""The ``smil`` command.

Subcommands map one-to-one onto workflow rules. Each lives in its own module under
:mod:`smil.commands` and exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code or ``None``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from smil import __version__
from smil.errors import SmilError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smil",
        description="Predict SMIL body-model parameters from single- and multi-view images.",
    )
    parser.add_argument("--version", action="version", version=f"smil {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the full traceback when a command fails"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    import smil.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"smil.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except SmilError as exc:
        if args.debug:
            raise
        print(f"smil: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smil: interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else int(code)
