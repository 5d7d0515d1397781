"""`lanegate simulate`: run a simulated inference host that speaks Ollama and OpenAI APIs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.tools.simulator.engine import Profile

DEFAULT_PORT = 11500  # not 11434, so it never collides with a real Ollama


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="run a simulated Mac inference host (Ollama + OpenAI-compatible API)",
        description="Serve a simulated inference host whose timing follows a calibrated "
        "profile: continuous batching, a bounded wait queue, and memory pressure.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument("--profile", default="m2-mini-16gb", help="default %(default)s")
    parser.add_argument("--profiles", metavar="FILE", help="profiles YAML (default: packaged)")
    parser.add_argument("--seed", type=int, help="override the profile's seed")
    parser.add_argument("--slots", type=int, help="override the parallel sequence count")
    parser.add_argument("--ttft-ms", type=float, help="override fixed-mode time to first token")
    parser.add_argument("--chunk-interval-ms", type=float, help="override fixed-mode spacing")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the profile, apply overrides, serve until interrupted; 2 on a bad profile."""
    import sys

    from gateway.tools.simulator.profiles import ProfileError

    try:
        profile = resolve_profile(args)
    except (ProfileError, ValueError) as exc:
        print(f"lanegate simulate: {exc}", file=sys.stderr)
        return 2
    serve(profile, args.host, args.port, args.log_level)
    return 0


def resolve_profile(args: argparse.Namespace) -> Profile:
    """The named profile from the chosen file, with command-line overrides applied."""
    import dataclasses
    from pathlib import Path

    from gateway.tools.simulator.profiles import ProfileError, load_profiles

    profiles = load_profiles(Path(args.profiles) if args.profiles else None)
    if args.profile not in profiles:
        known = ", ".join(sorted(profiles))
        raise ProfileError(f"unknown profile {args.profile!r} (known: {known})")
    overrides = {
        "seed": args.seed,
        "slots": args.slots,
        "ttft_ms": args.ttft_ms,
        "chunk_interval_ms": args.chunk_interval_ms,
    }
    changes = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(profiles[args.profile], **changes)


def serve(profile: Profile, host: str, port: int, log_level: str) -> None:
    import uvicorn

    from gateway.tools.simulator.server import create_app

    config = uvicorn.Config(
        create_app(profile),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=log_level,
        lifespan="on",
    )
    uvicorn.Server(config).run()
