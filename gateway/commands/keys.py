"""`lanegate keys new NAME`: make a client key, print it once, and the hash for the policy.

The key itself is stored nowhere: the policy holds only `sha256:<hex>`, so losing the policy
file does not leak keys, and a lost key is replaced by making a new one.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

# The policy's name pattern (gateway.policy.upstreams.NAME_PATTERN), without importing pydantic.
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="make client keys")
    commands = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    new = commands.add_parser(
        "new",
        help="print a fresh client key once, and the sha256 reference to put in the policy",
    )
    new.add_argument("name", metavar="NAME", help="the client's name in the policy, e.g. alice")
    new.set_defaults(func=run_new)
    parser.set_defaults(func=lambda _args: _usage(parser))


def run_new(args: argparse.Namespace) -> int:
    from gateway.serving.keys import hash_key, new_key

    if not NAME.match(args.name):
        print(
            f"lanegate keys: {args.name!r} is not a policy name: use lower-case letters, "
            "digits, '.', '_' or '-', starting with a letter or digit",
            file=sys.stderr,
        )
        return 2
    key = new_key()
    print(f"Key for {args.name} (shown once; give it to the client, store it nowhere else):")
    print()
    print(f"    {key}")
    print()
    print("Add the client to the policy (only the hash goes there):")
    print()
    print("clients:")
    print(f"  - name: {args.name}")
    print(f"    key: {hash_key(key)}")
    print("    # lanes: [interactive, batch]   # optional: the lanes it may use (default: all)")
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
