"""`lanegate policy check FILE` and `lanegate policy schema`: the policy file, for operators.

`check` validates a file the way `serve` would load it and prints every problem as
`file:line: field.path: message`, one per line (exit 1), or a one-line summary (exit 0).
`schema` prints the JSON Schema of the file, for editors that complete and check YAML.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    check.add_argument("file", metavar="FILE", help="policy YAML")
    check.set_defaults(func=run_check)
    schema = commands.add_parser("schema", help="print the policy's JSON Schema (for editors)")
    schema.set_defaults(func=run_schema)
    parser.set_defaults(func=lambda _args: _usage(parser))


def run_check(args: argparse.Namespace) -> int:
    from gateway.policy.loader import PolicyError, check_policy

    try:
        checked = check_policy(args.file)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        errors = sum(not problem.warning for problem in exc.problems)
        print(f"{args.file}: {errors} error{'' if errors == 1 else 's'}", file=sys.stderr)
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
