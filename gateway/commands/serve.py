"""`lanegate serve`: run the gateway (one uvicorn process on uvloop + httptools)."""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the gateway")
    parser.add_argument("--policy", help="policy YAML (default: LANEGATE_POLICY)")
    parser.add_argument("--host", help="bind address (default: LANEGATE_HOST or localhost)")
    parser.add_argument("--port", type=int, help="port (default: LANEGATE_PORT or 8400)")
    parser.add_argument("--log-level", help="debug, info, warning (default: LANEGATE_LOG_LEVEL)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.http_protocol import BoundedHeadProtocol
    from gateway.listen import bind_sockets
    from gateway.policy import PolicyError, load_policy
    from gateway.settings import Settings

    overrides = {k: v for k in ("policy", "host", "port", "log_level") if (v := getattr(args, k))}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    try:
        policy = load_policy(settings.policy)
    except PolicyError as exc:
        print(f"lanegate: the policy cannot be used:\n{exc}", file=sys.stderr)
        return 2
    sockets = bind_sockets(settings.host, settings.port)
    app = create_app(policy, settings)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=BoundedHeadProtocol,  # httptools, with a bound on the request head
        lifespan="on",
        access_log=False,  # lanegate writes its own access log, without bodies or keys
        server_header=False,
        proxy_headers=False,  # X-Forwarded-* is not trusted unless a proxy setting says so
        log_config=None,
        timeout_graceful_shutdown=round(settings.drain_timeout),
    )
    addresses = ", ".join(_address(s.getsockname()) for s in sockets)
    logging.getLogger("lanegate").info("lanegate listening on %s", addresses)
    uvicorn.Server(config).run(sockets=sockets)
    return 0


def _address(name: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: lanegate's access log already says it, once.
    logging.getLogger("httpx").setLevel(logging.WARNING)
