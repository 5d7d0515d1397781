"""The `lanegate` command line: builds the parser from one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from gateway import __version__

# Subcommand modules under gateway.commands, in the order `--help` lists them.
COMMANDS = (
    "init",
    "serve",
    "simulate",
    "demo",
    "policy",
    "keys",
    "agent",
    "status",
    "report",
    "service",
    "ladder",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanegate",
        description="Lane-aware gateway for local LLM servers and a remote Mac pool.",
    )
    parser.add_argument("--version", action="version", version=f"lanegate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"gateway.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result
