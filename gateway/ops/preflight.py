"""What must hold before lanegate is installed as a service: a policy that loads, and local
upstreams that answer. Shell: reads the policy file and sends one GET to each local upstream.

Refusing here beats installing a job that launchd would restart every ThrottleInterval
forever: `lanegate service install` prints these problems and exits non-zero, --dry-run too.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from gateway.ops.launchd import Install, ServiceKind
from gateway.policy import Policy, PolicyError, load_policy
from gateway.policy.spec import UpstreamKind, UpstreamSpec

PROBE_TIMEOUT_S = 3.0
# What each kind answers without loading a model.
HEALTH_PATH = {
    UpstreamKind.OLLAMA: "/api/version",
    UpstreamKind.LMSTUDIO: "/v1/models",
    UpstreamKind.LLAMACPP: "/health",
    UpstreamKind.MLX: "/health",
    UpstreamKind.OPENAI: "/v1/models",
}
LOCAL_POOL = "local"
# Ollama's server binary where its installers put it (Homebrew on Apple silicon and Intel, the
# app's bundled CLI); --ollama-bin names another.
OLLAMA_BINARIES = (
    "/opt/homebrew/bin/ollama",
    "/usr/local/bin/ollama",
    "/Applications/Ollama.app/Contents/Resources/ollama",
)

Probe = Callable[[str], "str | None"]  # URL -> why it failed, or None when it answered


def template(name: str) -> str:
    """A launchd template shipped in the package (a copy of deploy/launchd/NAME)."""
    return resources.files("gateway.ops").joinpath("launchd_templates", name).read_text("utf-8")


def install_problems(
    kind: ServiceKind, install: Install, no_probe: bool, probe: Probe
) -> list[str]:
    """Why this job would crash-loop under launchd (empty: it should not)."""
    if kind.program == "ollama":
        binary = install.program[0]
        ok = os.access(binary, os.X_OK)
        return [] if ok else [f"no Ollama server binary at {binary} (--ollama-bin PATH)"]
    if kind.subcommand != "serve":
        return []
    path = Path(install.environment["LANEGATE_POLICY"])
    if not path.exists():
        return [f"no policy at {path}: write one with `lanegate init` (or pass --policy FILE)"]
    policy, problems = policy_problems(path)
    if policy is None:
        return problems
    down = [] if no_probe else unreachable(policy, probe)
    if down:
        down.append(
            "start them first (Ollama: `lanegate service install ollama-agent`), or pass --no-probe"
        )
    return down


def ollama_binary(given: Path | None) -> str:
    """--ollama-bin, else `ollama` on PATH, else where its installers put it."""
    if given is not None:
        return os.path.abspath(given.expanduser())
    found = shutil.which("ollama")
    if found:
        return os.path.abspath(found)
    return next((b for b in OLLAMA_BINARIES if os.access(b, os.X_OK)), OLLAMA_BINARIES[0])


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return None if response.status < 500 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason)


def policy_problems(path: Path) -> tuple[Policy | None, list[str]]:
    """The policy at `path`, or every problem with it as `file:line: field: message`."""
    try:
        return load_policy(path), []
    except PolicyError as exc:
        return None, [str(problem) for problem in exc.problems if not problem.warning]


def unreachable(policy: Policy, probe: Probe = get) -> list[str]:
    """Each local upstream that does not answer, with its URL and why."""
    problems = []
    for spec in local_upstreams(policy):
        url = spec.base_url.rstrip("/") + HEALTH_PATH[spec.kind]
        failure = probe(url)
        if failure is not None:
            problems.append(f"upstream {spec.name} ({spec.kind.value}) at {url}: {failure}")
    return problems


def local_upstreams(policy: Policy) -> list[UpstreamSpec]:
    return [spec for spec in policy.upstreams if spec.pool == LOCAL_POOL]


def local_ollama(policy: Policy | None) -> UpstreamSpec | None:
    """The policy's Ollama on this machine (loopback), whose settings Ollama's service takes."""
    for spec in local_upstreams(policy) if policy else []:
        if spec.kind is UpstreamKind.OLLAMA and _loopback(spec.base_url):
            return spec
    return None


def _loopback(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")
