"""`lanegate serve`: run the gateway (one uvicorn process on uvloop + httptools)."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.settings import Settings

SHUTDOWN_STRAGGLERS_S = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the gateway")
    parser.add_argument(
        "--policy",
        help="policy YAML (default: LANEGATE_POLICY, else $LANEGATE_HOME/policy.yaml, "
        "~/.lanegate/policy.yaml: what `lanegate init` writes)",
    )
    parser.add_argument("--host", help="bind address (default: LANEGATE_HOST or localhost)")
    parser.add_argument("--port", type=int, help="port (default: LANEGATE_PORT or 8400)")
    parser.add_argument("--log-level", help="debug, info, warning (default: LANEGATE_LOG_LEVEL)")
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen beyond loopback even though the policy has no clients (anyone who can "
        "reach the port can use the models)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.ops.http_protocol import HeaderLimits, limited_protocol
    from gateway.ops.listen import bind_sockets, is_loopback, port_holder
    from gateway.ops.server import GracefulServer
    from gateway.policy import PolicyError, load_policy
    from gateway.serving.cors_app import with_cors
    from gateway.settings import Settings

    overrides = {k: v for k in ("policy", "host", "port", "log_level") if (v := getattr(args, k))}
    settings = Settings(**overrides)
    configure_logging(settings.log_level, settings)
    if not settings.policy.exists():
        print(
            f"lanegate serve: no policy at {settings.policy}: run `lanegate init` to write one "
            "for the servers on this machine, or pass --policy FILE",
            file=sys.stderr,
        )
        return 2
    try:
        policy = load_policy(settings.policy)
    except PolicyError as exc:
        print(f"lanegate: the policy cannot be used:\n{exc}", file=sys.stderr)
        return 2
    problem = missing_extra(settings) or exposure_problem(
        settings, bool(policy.clients), args.allow_unauthenticated
    )
    if problem is not None:
        print(f"lanegate serve: {problem}", file=sys.stderr)
        return 2
    try:
        sockets = bind_sockets(settings.host, settings.port)
    except OSError as exc:
        holder = port_holder(settings.port)
        by = f" (held by {holder})" if holder else ""
        print(f"lanegate serve: cannot listen on port {settings.port}: {exc}{by}", file=sys.stderr)
        return 2
    app = create_app(policy, settings)
    limits = HeaderLimits(
        settings.max_header_count, settings.max_header_bytes, settings.header_timeout
    )
    config = uvicorn.Config(
        with_cors(app, settings.cors_origins),  # CORS off: the app itself, no wrapper
        loop="uvloop",
        http=limited_protocol(limits),  # httptools, plus header count/size/time limits
        lifespan="on",
        access_log=False,  # lanegate writes its own access log, without bodies or keys
        server_header=False,
        proxy_headers=False,  # X-Forwarded-* is not trusted unless a proxy setting says so
        log_config=None,
        # The drain (GracefulServer) already waited for the requests in flight; uvicorn's own
        # wait after it only covers stragglers such as a health probe.
        timeout_graceful_shutdown=SHUTDOWN_STRAGGLERS_S,
        timeout_keep_alive=settings.keep_alive_timeout,
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile,
    )
    addresses = ", ".join(_address(s.getsockname()) for s in sockets)
    scheme = "https" if settings.tls_certfile else "http"
    logging.getLogger("lanegate").info("lanegate listening on %s (%s)", addresses, scheme)
    if scheme == "http" and not is_loopback(settings.host):
        logging.getLogger("lanegate").warning(
            "serving plain HTTP on %s: keys and prompts cross the LAN unencrypted; set "
            "LANEGATE_TLS_CERTFILE/KEYFILE or put a TLS proxy in front (docs/security.md)",
            settings.host,
        )
    server = GracefulServer(config, app)
    # Everything loaded so far (modules, policy, app) lives as long as the process: moved out
    # of the collector's reach, a full collection walks only what requests made, so it no
    # longer stalls a request for 11 to 16 ms (docs/performance.md). Startup's own garbage
    # is collected first, or it would be kept for good.
    gc.collect()
    gc.freeze()
    server.run(sockets=sockets)
    return 1 if server.forced else 0


def _address(name: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def missing_extra(settings: Settings) -> str | None:
    """A setting whose package comes with an extra that is not installed, and how to get it."""
    from importlib.util import find_spec

    if settings.redis_url and find_spec("redis") is None:
        return "LANEGATE_REDIS_URL needs the redis client: pip install 'lanegate[redis]'"
    if settings.upstream_client != "lean" and find_spec("aiohttp") is None:
        return (
            f"LANEGATE_UPSTREAM_CLIENT={settings.upstream_client} needs the measured alternative "
            "clients: pip install 'lanegate[bench]' (or unset it: the default client needs none)"
        )
    return None


def exposure_problem(
    settings: Settings, has_clients: bool, allow_unauthenticated: bool
) -> str | None:
    """Why these settings must not start a gateway, or None. Refuses before binding anything."""
    from gateway.ops.listen import is_loopback
    from gateway.serving.cors import parse_origins

    if (settings.tls_certfile is None) != (settings.tls_keyfile is None):
        return "set both LANEGATE_TLS_CERTFILE and LANEGATE_TLS_KEYFILE, or neither"
    for path in (settings.tls_certfile, settings.tls_keyfile):
        if path is not None and not path.is_file():
            return f"TLS file {path} does not exist (or is not a file)"
    try:
        parse_origins(settings.cors_origins)
    except ValueError as exc:
        return f"LANEGATE_CORS_ORIGINS: {exc}"
    if is_loopback(settings.host) or has_clients or allow_unauthenticated:
        return None
    return (
        f"refusing to listen on {settings.host}: the policy has no clients, so anyone who can "
        "reach this port could use your models without a key. Add clients with keys to the "
        "policy (`lanegate keys new NAME`, docs/security.md), or bind --host 127.0.0.1, or pass "
        "--allow-unauthenticated if this network is yours alone"
    )


def configure_logging(level: str, settings: Settings | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings is not None and settings.log_file is not None:
        # Rotated here: launchd's StandardErrorPath keeps one file open forever.
        from logging.handlers import RotatingFileHandler

        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        rotating = RotatingFileHandler(
            settings.log_file, maxBytes=settings.log_max_bytes, backupCount=settings.log_backups
        )
        handlers = [rotating]
    from gateway.observe.log_format import formatter

    shape = formatter(settings.log_format if settings is not None else "text")
    for handler in handlers:
        handler.setFormatter(shape)
    logging.basicConfig(level=level.upper(), handlers=handlers)
    logging.captureWarnings(True)  # Python warnings as log records, in the same format
    # httpx logs every request at INFO: lanegate's access log already says it, once.
    logging.getLogger("httpx").setLevel(logging.WARNING)
