"""`lanegate policy check FILE` and `lanegate policy schema`: the policy file, for operators.

`check` validates a file the way `serve` would load it and prints every problem as
`file:line: field.path: message`, one per line (exit 1), or a one-line summary (exit 0).
`schema` prints the JSON Schema of the file, for editors that complete and check YAML.
`example NAME` prints a policy shipped with lanegate (`default`: a Mac mini and a remote pool;
`demo`: what `lanegate demo` serves); `check --examples` checks every shipped one in place.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("policy", help="check a policy file, or print its schema")
    commands = parser.add_subparsers(dest="policy_command", metavar="ACTION")
    check = commands.add_parser(
        "check",
        help="validate a policy file; print every problem with file, line and field",
        description="Exit 0 when the policy can be served (warnings are printed but allowed), "
        "1 when it has errors.",
    )
    check.add_argument("file", metavar="FILE", nargs="?", help="policy YAML")
    check.add_argument("--examples", action="store_true", help="check the shipped examples")
    check.set_defaults(func=run_check)
    example = commands.add_parser("example", help="print a policy shipped with lanegate")
    example.add_argument("name", nargs="?", choices=EXAMPLES, default="default")
    example.set_defaults(func=run_example)
    schema = commands.add_parser("schema", help="print the policy's JSON Schema (for editors)")
    schema.set_defaults(func=run_schema)
    parser.set_defaults(func=lambda _args: _usage(parser))


EXAMPLES = ("default", "demo")


def example_path(name: str) -> Traversable:
    """A shipped example policy (a copy of policies/NAME.yaml inside the package)."""
    return resources.files("gateway.policy").joinpath("examples", f"{name}.yaml")


def run_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_path(args.name).read_text("utf-8"))
    return 0


def run_check(args: argparse.Namespace) -> int:
    if args.examples == (args.file is not None):
        print("lanegate policy check: name a FILE, or pass --examples", file=sys.stderr)
        return 2
    if args.file is not None:
        return _check_one(args.file)
    codes = []
    for name in EXAMPLES:
        with resources.as_file(example_path(name)) as path:
            print(f"{path}:")
            codes.append(_check_one(str(path)))
    return max(codes)


def _check_one(file: str) -> int:
    from gateway.policy.loader import PolicyError, check_policy

    try:
        checked = check_policy(file)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        errors = sum(not problem.warning for problem in exc.problems)
        print(f"{file}: {errors} error{'' if errors == 1 else 's'}", file=sys.stderr)
        if not exc.complete:
            print(
                "names used across sections (lanes, clients, upstreams) are checked once the "
                "errors above are fixed",
                file=sys.stderr,
            )
        return 1
    for warning in checked.warnings:
        print(warning)
    policy = checked.policy
    print(
        f"OK: {len(policy.upstreams)} upstreams, {len(policy.lanes)} lanes, "
        f"{len(policy.clients)} clients, {len(policy.rules)} rules"
    )
    return 0


def run_schema(args: argparse.Namespace) -> int:
    from gateway.policy.loader import policy_schema

    print(json.dumps(policy_schema(), indent=2, ensure_ascii=False))
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
