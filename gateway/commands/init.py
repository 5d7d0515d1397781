"""`lanegate init`: find the local inference servers and write a starter policy for them.

Asks nothing it can find out: probes Ollama (:11434), LM Studio (:1234) and :8080 (llama-server
or mlx_lm) over loopback, and writes `$LANEGATE_HOME/policy.yaml` (default
`~/.lanegate/policy.yaml`), the file `lanegate serve` reads by default. The file is checked
the way `serve` loads it before it is written, and an existing one is never overwritten
without `--force`. What the answers mean is decided by `gateway.policy.starter` (pure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PROBE_TIMEOUT_S = 1.5  # loopback answers at once or not at all; a cold server may be slow
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a model list is small: never read an unbounded body


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "init",
        help="probe the local inference servers and write a starter policy",
        description="Probes Ollama (127.0.0.1:11434), LM Studio (:1234) and llama-server or "
        "mlx_lm (:8080), and writes a commented policy for those that answer to "
        "$LANEGATE_HOME/policy.yaml (default ~/.lanegate/policy.yaml).",
    )
    parser.add_argument("--out", type=Path, help="write here instead (default: see above)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument(
        "--probe",
        action="append",
        default=[],
        metavar="KIND=URL",
        help="probe URL for ollama, lmstudio or port8080 instead of its default port "
        "(repeatable), e.g. ollama=http://127.0.0.1:11500",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.policy import PolicyError, load_policy_text
    from gateway.policy.starter import identify, render
    from gateway.settings import lanegate_home

    try:
        probes = probe_urls(args.probe)
    except ValueError as exc:
        print(f"lanegate init: {exc}", file=sys.stderr)
        return 2
    out = (args.out or lanegate_home() / "policy.yaml").expanduser()
    if out.exists() and not args.force:
        print(f"lanegate init: {out} exists; keeping it (--force replaces it)", file=sys.stderr)
        return 1
    found = []
    for probe, url in probes.items():
        server = identify(probe, url, ask(url, probe))
        print(f"  {probe:9} {url}: {server.kind if server else 'no answer'}", file=sys.stderr)
        if server is not None:
            found.append(server)
    text = render(found, probes, str(out))
    try:
        load_policy_text(text, str(out))
    except PolicyError as exc:  # a bug here, never the operator's: say so rather than write it
        print(f"lanegate init: the starter policy does not load:\n{exc}", file=sys.stderr)
        return 1
    _write(out, text)
    print(f"wrote {out}", file=sys.stderr)
    if not found:
        print("nothing answered: the policy assumes Ollama on :11434; edit it", file=sys.stderr)
    print(f"next: lanegate serve   (reads {out}); lanegate service install", file=sys.stderr)
    return 0


def probe_urls(overrides: list[str]) -> dict[str, str]:
    """The default probe URLs with `KIND=URL` overrides applied."""
    from gateway.policy.starter import DEFAULT_PROBES

    probes = dict(DEFAULT_PROBES)
    for item in overrides:
        kind, sep, url = item.partition("=")
        if not sep or kind not in probes or not url.startswith(("http://", "https://")):
            known = ", ".join(probes)
            raise ValueError(f"--probe {item!r}: write KIND=http://HOST:PORT, KIND one of {known}")
        probes[kind] = url.rstrip("/")
    return probes


def ask(base_url: str, probe: str) -> dict[str, Any]:
    """Each path the probe reads -> its JSON, or None (refused, an error status, not JSON)."""
    from gateway.policy.starter import PATHS

    return {path: _get_json(base_url + path) for path in PATHS[probe]}


def _get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            return json.loads(response.read(MAX_ANSWER_BYTES))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a temp file beside it, then a rename; readable by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.chmod(temp, 0o600)
    os.replace(temp, path)
