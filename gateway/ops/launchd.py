"""launchd service files for lanegate, and the launchctl command lines that manage them. Pure.

Owns: rendering the plist templates of `deploy/launchd/` (string.Template, `${NAME}`) from an
`Install` (absolute paths, user, limits, `LANEGATE_*` environment), checking the result parses
as a plist and holds what a long-running gateway needs, and building the modern launchctl
commands (`bootstrap`, `bootout`, `kickstart -k`, `print`, `enable`) for the right domain.
Must not: read files, the environment or the clock, or run anything (`commands/service.py` does
that, with an injectable runner, so the command lines are testable on any OS).
"""

from __future__ import annotations

import math
import plistlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any
from xml.sax.saxutils import escape

from gateway.errors import ConfigError

# Seconds launchd waits after SIGTERM beyond the drain timeout before it sends SIGKILL:
# lifespan shutdown (closing upstream clients, flushing budgets) runs after the drain.
EXIT_MARGIN_S = 15
DEFAULT_NUMBER_OF_FILES = 8192  # launchd's default soft limit is 256: ~100 streams
DEFAULT_THROTTLE_S = 10
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*_[A-Z0-9_]+$")
# Ollama's settings that lanegate's policy relies on, and what they default to in its service.
OLLAMA_KEEP_ALIVE = "30m"  # keep the interactive model loaded between chats (Ollama: 5m)
OLLAMA_MAX_LOADED_MODELS = "2"  # the interactive model and a heartbeat lane's small one
# Keys every lanegate plist must hold, whatever its kind.
REQUIRED_KEYS = (
    "Label",
    "ProgramArguments",
    "WorkingDirectory",
    "EnvironmentVariables",
    "RunAtLoad",
    "KeepAlive",
    "ProcessType",
    "ThrottleInterval",
    "ExitTimeOut",
    "SoftResourceLimits",
    "StandardOutPath",
    "StandardErrorPath",
)


class ServiceFileError(ConfigError, ValueError):
    """The inputs cannot make a safe service file; the message says which and why."""


@dataclass(frozen=True)
class ServiceKind:
    name: str
    label: str
    template: str  # file name under deploy/launchd/
    system: bool  # LaunchDaemon in the `system` domain, else LaunchAgent in `gui/$UID`
    subcommand: str  # the subcommand the service runs (`lanegate serve`, `ollama serve`)
    drains: bool  # holds client requests: ExitTimeOut must outlast the drain
    env_prefix: str = "LANEGATE_"  # the only variables its plist may set
    program: str = "lanegate"  # the program it runs: lanegate itself, or Ollama's server

    @property
    def plist_name(self) -> str:
        return f"{self.label}.plist"


_GATEWAY, _AGENT, _OLLAMA = "io.lanegate.gateway", "io.lanegate.agent", "io.lanegate.ollama"
KINDS: dict[str, ServiceKind] = {
    kind.name: kind
    for kind in (
        ServiceKind("gateway-agent", _GATEWAY, "gateway-agent.plist", False, "serve", True),
        ServiceKind("gateway-daemon", _GATEWAY, "gateway-daemon.plist", True, "serve", True),
        ServiceKind("host-agent", _AGENT, "host-agent.plist", False, "agent", False),
        # Ollama's own server with the settings the policy relies on, in place of the app
        # (whose `launchctl setenv` settings do not survive a reboot).
        ServiceKind(
            "ollama-agent",
            _OLLAMA,
            "ollama-agent.plist",
            False,
            "serve",
            False,
            "OLLAMA_",
            "ollama",
        ),
        ServiceKind(
            "ollama-daemon",
            _OLLAMA,
            "ollama-daemon.plist",
            True,
            "serve",
            False,
            "OLLAMA_",
            "ollama",
        ),
    )
}


@dataclass(frozen=True)
class Install:
    """Where things are on the target Mac; every path absolute."""

    program: tuple[str, ...]  # argv before the subcommand: (<venv>/bin/lanegate,) or python -m
    working_directory: str
    log_dir: str
    user_name: str
    group_name: str = "staff"
    drain_timeout_s: float = 30.0
    arguments: tuple[str, ...] = ()  # after the subcommand (the host agent's --host/--key)
    environment: Mapping[str, str] = field(default_factory=dict)
    throttle_interval_s: int = DEFAULT_THROTTLE_S
    number_of_files: int = DEFAULT_NUMBER_OF_FILES


def exit_timeout_for(drain_timeout_s: float) -> int:
    """launchd's ExitTimeOut: the drain, then lifespan shutdown, then SIGKILL."""
    return math.ceil(drain_timeout_s) + EXIT_MARGIN_S


def render(kind: ServiceKind, template: str, install: Install) -> bytes:
    """The plist for `kind`, checked: raises ServiceFileError instead of a broken file."""
    _check_install(kind, install)
    argv = (*install.program, kind.subcommand, *install.arguments)
    values = {
        "LABEL": kind.label,
        "PROGRAM_ARGUMENTS": "\n".join(f"    <string>{escape(a)}</string>" for a in argv),
        "WORKING_DIRECTORY": escape(install.working_directory),
        "ENVIRONMENT": _environment_xml(install.environment, kind.env_prefix),
        "LOG_DIR": escape(install.log_dir.rstrip("/")),
        "USER_NAME": escape(install.user_name),
        "GROUP_NAME": escape(install.group_name),
        "THROTTLE_INTERVAL": str(install.throttle_interval_s),
        "EXIT_TIMEOUT": str(exit_timeout_for(install.drain_timeout_s) if kind.drains else 10),
        "NUMBER_OF_FILES": str(install.number_of_files),
    }
    text = _substitute(template, values)
    problems = plist_problems(kind, parse(text.encode()), install.drain_timeout_s)
    if problems:
        raise ServiceFileError(f"the rendered {kind.name} plist is unsafe: " + "; ".join(problems))
    return text.encode()


def render_newsyslog(template: str, install: Install) -> bytes:
    """The /etc/newsyslog.d entry rotating the files launchd writes for lanegate."""
    _check_absolute("log directory", install.log_dir)
    _check_user(install.user_name)
    values = {
        "LOG_DIR": install.log_dir.rstrip("/"),
        "USER_NAME": install.user_name,
        "GROUP_NAME": install.group_name,
    }
    return _substitute(template, values).encode()


def parse(data: bytes) -> dict[str, Any]:
    try:
        loaded = plistlib.loads(data)
    except (plistlib.InvalidFileException, ValueError) as exc:  # expat errors are ValueErrors
        raise ServiceFileError(f"not a valid plist: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ServiceFileError("the plist's top level is not a dictionary")
    return loaded


def plist_problems(
    kind: ServiceKind, plist: Mapping[str, Any], drain_timeout_s: float
) -> list[str]:
    """What makes this plist unfit for a long-running lanegate service (empty: nothing)."""
    problems = [f"{key} is missing" for key in REQUIRED_KEYS if key not in plist]
    if problems:
        return problems
    argv = plist["ProgramArguments"]
    if not argv or not str(argv[0]).startswith("/"):
        problems.append(f"ProgramArguments[0] must be an absolute path, not {argv[:1]!r}")
    for key in ("WorkingDirectory", "StandardOutPath", "StandardErrorPath"):
        if not str(plist[key]).startswith("/"):
            problems.append(f"{key} must be an absolute path, not {plist[key]!r}")
    if plist["ProcessType"] not in ("Interactive", "Standard"):
        problems.append("ProcessType must be Interactive or Standard (unset is throttled)")
    exit_timeout = plist["ExitTimeOut"]
    if not isinstance(exit_timeout, int) or exit_timeout <= 0:
        problems.append("ExitTimeOut must be a positive number of seconds (0 means never)")
    elif kind.drains and exit_timeout <= drain_timeout_s:
        problems.append(
            f"ExitTimeOut {exit_timeout} s must exceed the drain ({drain_timeout_s:g} s)"
        )
    if kind.system and str(plist.get("UserName", "root")) in ("root", "0", ""):
        problems.append("a LaunchDaemon must set UserName to a user other than root")
    if not plist["SoftResourceLimits"].get("NumberOfFiles"):
        problems.append("SoftResourceLimits.NumberOfFiles is missing")
    return problems


def ollama_environment(
    base_url: str | None, slots: int | None, home: str, overrides: Mapping[str, str]
) -> dict[str, str]:
    """OLLAMA_* for Ollama's service: where it listens and its parallel slots as the policy's
    local Ollama upstream says (`base_url`, `slots`), keep-alive and loaded models as lanegate
    needs them, its models where the app keeps them; `overrides` (--env) win."""
    env = {
        "OLLAMA_KEEP_ALIVE": OLLAMA_KEEP_ALIVE,
        "OLLAMA_MAX_LOADED_MODELS": OLLAMA_MAX_LOADED_MODELS,
        "OLLAMA_MODELS": f"{home.rstrip('/')}/.ollama/models",
        "OLLAMA_HOST": "127.0.0.1:11434",
        "OLLAMA_NUM_PARALLEL": "4",
    }
    if base_url is not None:
        env["OLLAMA_HOST"] = re.sub(r"^https?://", "", base_url).rstrip("/")
    if slots is not None:
        env["OLLAMA_NUM_PARALLEL"] = str(slots)
    return {**env, **overrides}


# -- launchctl -------------------------------------------------------------------------------


def domain(kind: ServiceKind, uid: int) -> str:
    return "system" if kind.system else f"gui/{uid}"


def service_target(kind: ServiceKind, uid: int) -> str:
    return f"{domain(kind, uid)}/{kind.label}"


def plist_path(kind: ServiceKind, home: str) -> str:
    """Where launchd looks for the job: /Library/LaunchDaemons or ~/Library/LaunchAgents."""
    if kind.system:
        return f"/Library/LaunchDaemons/{kind.plist_name}"
    return f"{home.rstrip('/')}/Library/LaunchAgents/{kind.plist_name}"


def bootstrap_commands(kind: ServiceKind, uid: int, path: str) -> list[list[str]]:
    """Load (and so start: RunAtLoad) the job; `enable` clears an earlier `disable`."""
    target = service_target(kind, uid)
    return [
        ["launchctl", "enable", target],
        ["launchctl", "bootstrap", domain(kind, uid), path],
    ]


def bootout_command(kind: ServiceKind, uid: int) -> list[str]:
    """Stop the job (SIGTERM, then SIGKILL after ExitTimeOut) and unload it."""
    return ["launchctl", "bootout", service_target(kind, uid)]


def restart_command(kind: ServiceKind, uid: int) -> list[str]:
    """Kill and restart the running job with the plist launchd already holds."""
    return ["launchctl", "kickstart", "-k", service_target(kind, uid)]


def status_command(kind: ServiceKind, uid: int) -> list[str]:
    return ["launchctl", "print", service_target(kind, uid)]


def lint_command(path: str) -> list[str]:
    return ["plutil", "-lint", path]


def quote_command(argv: Sequence[str]) -> str:
    """A command line as an operator would type it (for --dry-run and error messages)."""
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./-]+", a) else _sh_quote(a) for a in argv)


# -- helpers ---------------------------------------------------------------------------------


def _sh_quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def _substitute(template: str, values: Mapping[str, str]) -> str:
    try:
        return Template(template).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ServiceFileError(f"the template has an unknown placeholder: {exc}") from exc


def _environment_xml(environment: Mapping[str, str], prefix: str) -> str:
    lines = []
    for name in sorted(environment):
        if not (ENV_NAME.match(name) and name.startswith(prefix)):
            raise ServiceFileError(f"{name!r}: only {prefix}* variables go into this plist")
        lines.append(f"    <key>{name}</key>\n    <string>{escape(environment[name])}</string>")
    return "\n".join(lines)


def _check_install(kind: ServiceKind, install: Install) -> None:
    if not install.program:
        raise ServiceFileError("no program to run")
    _check_absolute("program", install.program[0])
    _check_absolute("working directory", install.working_directory)
    _check_absolute("log directory", install.log_dir)
    _check_user(install.user_name)
    if install.number_of_files < 256:
        raise ServiceFileError("NumberOfFiles below 256 (launchd's default) makes no sense")
    if install.throttle_interval_s < 1:
        raise ServiceFileError("ThrottleInterval must be at least 1 s")


def _check_absolute(what: str, path: str) -> None:
    if not path.startswith("/"):
        raise ServiceFileError(f"the {what} must be an absolute path, not {path!r}")


def _check_user(user: str) -> None:
    if user in ("", "root", "0"):
        raise ServiceFileError(
            "lanegate never runs as root: name the user it runs as (--user NAME)"
        )
