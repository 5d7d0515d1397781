"""`lanegate agent`: report this host's memory signals over HTTP for a gateway to read.

Run on each remote Mac (under launchd) so the gateway sees when a pool host is itself under
memory pressure. Refuses to listen beyond loopback without a key.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_PORT = 8401


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "agent",
        help="serve this host's memory signals (swap, pressure) for a remote gateway",
        description="Serve GET /signals (swap, memory pressure, memory) and GET /healthz. "
        "A key is required unless --host is a loopback address.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument(
        "--key",
        metavar="REF",
        help="key reference callers must match: env:VARIABLE or sha256:<64 hex digits>",
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between samples (default 2)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace, env: dict[str, str]) -> str | None:
    """Why these arguments must not start an agent, or None if they may."""
    from gateway.ops.listen import is_loopback
    from gateway.serving.keys import KEY_REF_HELP, is_key_ref

    if args.interval <= 0:
        return f"--interval must be positive, not {args.interval:g}"
    if args.key is None:
        if is_loopback(args.host):
            return None
        return (
            f"refusing to listen on {args.host} without a key: anyone who can reach it could "
            f"read this host's memory state. Pass --key env:VARIABLE or --key sha256:<hex>, "
            f"or bind --host 127.0.0.1"
        )
    if not is_key_ref(args.key):
        return f"--key {args.key!r} is not a key reference: {KEY_REF_HELP}"
    if args.key.startswith("env:") and not env.get(args.key.removeprefix("env:")):
        return f"--key {args.key}: that environment variable is unset or empty"
    return None


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 2 (before binding anything) on unsafe or invalid arguments."""
    env = dict(os.environ)
    problem = check_args(args, env)
    if problem is not None:
        print(f"lanegate agent: {problem}", file=sys.stderr)
        return 2
    serve(args, env)
    return 0


def serve(args: argparse.Namespace, env: dict[str, str]) -> None:
    import uvicorn

    from gateway.commands.serve import configure_logging
    from gateway.offload.signals import default_source
    from gateway.settings import Settings
    from gateway.tools.agent import create_agent_app

    # The gateway's logging (LANEGATE_LOG_FORMAT=json included): the agent is a service too.
    configure_logging(args.log_level, Settings())
    app = create_agent_app(default_source(), args.key, env, args.interval)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=args.log_level,
        log_config=None,
        lifespan="on",
    )
    uvicorn.Server(config).run()
