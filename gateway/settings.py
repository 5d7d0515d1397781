"""Process settings from the environment (`LANEGATE_*`), read once at start-up.

The policy file holds what ops tune while the gateway runs (upstreams, lanes); settings hold
what only changes with a restart (where to listen, where state lives, hard limits).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Loopback on both families by default: `localhost` often resolves to ::1 first.
LOOPBACK = "localhost"


def lanegate_home() -> Path:
    """$LANEGATE_HOME, else ~/.lanegate: the policy `lanegate init` writes and `serve` reads by
    default, and the state (ledger, budgets) unless LANEGATE_STATE_DIR says otherwise."""
    return Path(os.environ.get("LANEGATE_HOME") or Path.home() / ".lanegate").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LANEGATE_", extra="ignore")

    host: str = Field(default=LOOPBACK, description="Bind address; 'localhost' = 127.0.0.1 + ::1")
    port: Annotated[int, Field(ge=0, le=65535)] = 8400
    policy: Path = Field(default_factory=lambda: lanegate_home() / "policy.yaml")
    state_dir: Path = Field(default_factory=lanegate_home)
    # Vision requests carry several base64 images: 32 MiB by default.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024
    # A non-streamed upstream body is held whole before it is sent on (so a failure half-way
    # is still a clean 502): beyond this many bytes the request gets 502
    # upstream_body_too_large. Embeddings of 3,000 inputs are ~22 MB.
    max_upstream_body_bytes: Annotated[int, Field(ge=64 * 1024)] = 64 * 1024 * 1024
    drain_timeout: Annotated[float, Field(ge=0)] = 30.0
    log_level: str = "info"
    # `json`: one JSON object per line for every log record (jq, Loki); `text`: classic lines.
    log_format: Literal["text", "json"] = "text"
    # How often each upstream's model list (and llama.cpp's slots) is read, seconds.
    discovery_interval: Annotated[float, Field(gt=0)] = 30.0
    # The upstream HTTP client: lanegate's lean one, or aiohttp / the httpx API for comparison.
    upstream_client: Literal["lean", "aiohttp", "httpx"] = "lean"
    access_log: bool = True
    # How long the request ledger (state_dir/ledger.sqlite) keeps its rows, days.
    ledger_retention_days: Annotated[float, Field(gt=0)] = 14.0
    # -- secure defaults (docs/security.md) ----------------------------------------------------
    # Serve HTTPS on LAN binds: PEM certificate (chain) and its private key, both or neither.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # Browser origins allowed to call the API (CORS), comma-separated, e.g.
    # "https://chat.example.lan,http://localhost:3000"; empty: CORS off (no headers at all).
    cors_origins: str = ""
    # Request headers: how many, and how many bytes with the request line (431 beyond), and
    # seconds to receive them (408); seconds to receive the whole body (408).
    max_header_count: Annotated[int, Field(ge=8)] = 100
    max_header_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    header_timeout: Annotated[float, Field(gt=0)] = 10.0
    body_timeout: Annotated[float, Field(gt=0)] = 60.0
    keep_alive_timeout: Annotated[int, Field(ge=1)] = 5
    # lanegate's own log file, rotated in-process (launchd's StandardErrorPath never rotates).
    log_file: Path | None = None
    log_max_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    log_backups: Annotated[int, Field(ge=1)] = 5
    # Shared lanes across gateways (docs/scaling.md): unset keeps everything in this process.
    redis_url: str | None = None
    # Seconds a concurrency lease lives without renewal: a crashed gateway's slots free by then.
    redis_lease_ttl: Annotated[float, Field(ge=0.5, le=600)] = 10.0
    # Key prefix, so several lanegate deployments can share one Redis.
    redis_prefix: str = "lanegate"
