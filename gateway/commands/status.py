"""`lanegate status`: a running gateway's lanes, upstreams, host and offload, as tables.

Fetches `GET /admin/status` with the admin key and prints it through the pure
`status_table.render_status` (or the JSON itself with `--json`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

DEFAULT_PORT = 8400


def default_url(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    return f"http://127.0.0.1:{env.get('LANEGATE_PORT') or DEFAULT_PORT}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show a running gateway's lanes, upstreams, host signals and offload state",
        description="Reads GET /admin/status with the admin key.",
    )
    parser.add_argument(
        "--url", help="the gateway (default: http://127.0.0.1:$LANEGATE_PORT, else :8400)"
    )
    parser.add_argument("--admin-key", help="the admin key (default: LANEGATE_ADMIN_KEY)")
    parser.add_argument("--json", action="store_true", help="print the status document as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    from gateway.observe.status_table import render_status

    url = (args.url or default_url()).rstrip("/")
    key = args.admin_key or os.environ.get("LANEGATE_ADMIN_KEY")
    if not key:
        return _fail("no admin key: pass --admin-key or set LANEGATE_ADMIN_KEY")
    try:
        response = httpx.get(
            f"{url}/admin/status",
            headers={"Authorization": f"Bearer {key}"},
            timeout=args.timeout,
        )
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach the gateway at {url}: {exc} (is `lanegate serve` running?)")
    if response.status_code != 200:
        return _fail(f"{url}/admin/status answered {response.status_code}: {_message(response)}")
    if args.json:
        print(json.dumps(response.json(), indent=2))
    else:
        sys.stdout.write(render_status(response.json()))
    return 0


def _message(response: Any) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(response.text[:200])


def _fail(message: str) -> int:
    print(f"lanegate status: {message}", file=sys.stderr)
    return 1
