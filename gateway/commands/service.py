"""`lanegate service render|install|uninstall|status|upgrade`: run lanegate under launchd.

`render` works anywhere (it prints the plist, or the newsyslog entry, so it can be read and
reviewed on Linux too); the others drive `launchctl` and exist only on macOS: elsewhere they
say so and exit 2, unless `--dry-run`, which prints the commands they would run. The command
runner, the platform and the user's ids are injectable (`Host`), so tests check the exact
command lines without a Mac. Rendering and command lines are pure (`gateway.ops.launchd`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.ops import launchd, preflight
from gateway.ops.launchd import KINDS, Install, ServiceFileError, ServiceKind

Runner = Callable[[Sequence[str]], "tuple[int, str]"]
BOOTSTRAP_TRIES = 5  # bootstrap right after bootout can fail with 5 (I/O error) for a moment


def run_command(argv: Sequence[str]) -> tuple[int, str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    return done.returncode, (done.stdout + done.stderr).strip()


@dataclass
class Host:
    """What the command needs from the machine; tests pass their own."""

    platform: str = sys.platform
    uid: int = field(default_factory=os.getuid)
    euid: int = field(default_factory=os.geteuid)
    home: str = field(default_factory=lambda: str(Path.home()))
    user: str = field(default_factory=lambda: os.environ.get("SUDO_USER") or _login_name())
    home_of: Callable[[str], str] = field(default_factory=lambda: _home_of)
    run: Runner = run_command
    probe: preflight.Probe = preflight.get  # one GET to a local upstream: None when it answers
    sleep: Callable[[float], None] = time.sleep
    out: Any = sys.stdout
    err: Any = sys.stderr


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "service",
        help="render, install or remove the launchd service (macOS)",
        description="Kinds: gateway-agent (per user, gui/$UID), gateway-daemon (from boot, "
        "system domain, runs as --user), host-agent (`lanegate agent` on a remote Mac), "
        "ollama-agent / ollama-daemon (Ollama's own server with the OLLAMA_* settings the "
        "policy relies on), newsyslog (render only: the log rotation entry for "
        "/etc/newsyslog.d).",
    )
    actions = parser.add_subparsers(dest="service_action", metavar="ACTION")
    for action in ("render", "install", "uninstall", "status", "upgrade"):
        sub = actions.add_parser(action, help=_HELP[action])
        kinds = [*KINDS, "newsyslog"] if action == "render" else list(KINDS)
        sub.add_argument("kind", choices=kinds, nargs="?", default="gateway-agent")
        if action != "status":
            sub.add_argument("--dry-run", action="store_true", help="print, change nothing")
        if action in ("render", "install", "upgrade"):
            _add_install_options(sub)
        if action == "render":
            sub.add_argument("--out", type=Path, help="write here instead of stdout")
        sub.set_defaults(func=lambda args: main(args, Host()))
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)


_HELP = {
    "render": "print the plist (or newsyslog entry) that install would write",
    "install": "render, validate, write and bootstrap the job",
    "uninstall": "bootout the job and remove its plist",
    "status": "launchctl print the job",
    "upgrade": "re-render with this lanegate (e.g. a new venv) and restart",
}


def _add_install_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--user", help="user the daemon runs as (default: $SUDO_USER or you)")
    sub.add_argument("--group", default="staff", help="its group (default %(default)s)")
    sub.add_argument("--log-dir", type=Path, help="default ~USER/Library/Logs/lanegate")
    sub.add_argument("--state-dir", type=Path, help="LANEGATE_STATE_DIR (default ~USER/.lanegate)")
    sub.add_argument("--policy", type=Path, help="LANEGATE_POLICY (default STATE_DIR/policy.yaml)")
    sub.add_argument("--host", help="LANEGATE_HOST for the gateway; --host of the host agent")
    sub.add_argument("--port", type=int, help="LANEGATE_PORT; the host agent's --port")
    sub.add_argument(
        "--key", help="host agent: key reference (sha256:<hex>), required off loopback"
    )
    sub.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="LANEGATE_* (OLLAMA_* for the ollama kinds); repeatable",
    )
    sub.add_argument("--ollama-bin", type=Path, help="Ollama's server binary (ollama kinds)")
    sub.add_argument(
        "--no-probe",
        action="store_true",
        help="install even if a local upstream does not answer now (the policy is still checked)",
    )


def main(args: argparse.Namespace, host: Host) -> int:
    try:
        if args.service_action == "render":
            return _render(args, host)
        kind = KINDS[args.kind]
        if host.platform != "darwin" and not args.__dict__.get("dry_run"):
            print(
                f"lanegate service {args.service_action}: launchd exists only on macOS, and this "
                f"is {host.platform}. `lanegate service render {args.kind}` prints the plist; "
                f"`--dry-run` prints the launchctl commands that would run.",
                file=host.err,
            )
            return 2
        action = {"install": _install, "upgrade": _install, "uninstall": _uninstall}
        if args.service_action == "status":
            return _status(kind, host)
        return action[args.service_action](args, kind, host)
    except ServiceFileError as exc:
        print(f"lanegate service: {exc}", file=host.err)
        return 2


def build_install(
    args: argparse.Namespace,
    kind: ServiceKind | None,
    host: Host,
    previous: dict[str, Any] | None = None,
) -> Install:
    """The Install for these options: defaults under the service user's home, all absolute.
    `previous` (the installed plist, on upgrade) supplies what the options leave out."""
    from gateway.settings import Settings

    previous = previous or {}
    user = args.user or previous.get("UserName") or host.user
    home = host.home_of(user)
    state_dir = _absolute(args.state_dir or Path(home) / ".lanegate")
    log_dir = _absolute(args.log_dir or Path(home) / "Library" / "Logs" / "lanegate")
    env = {**previous.get("EnvironmentVariables", {}), **dict(_parse_env(args.env))}
    arguments: tuple[str, ...] = ()
    program = _program()
    if kind is not None and kind.program == "ollama":
        program = (preflight.ollama_binary(args.ollama_bin),)
        policy, _ = preflight.policy_problems(_policy_path(args, state_dir, previous))
        ollama = preflight.local_ollama(policy)
        env = launchd.ollama_environment(
            ollama.base_url if ollama else None,
            ollama.max_concurrency if ollama else None,
            home,
            env,  # --env and the installed job's: render refuses any but OLLAMA_*
        )
        state_dir = Path(home)
    elif kind is not None and kind.subcommand == "agent":
        arguments = _agent_arguments(args) if args.host or args.key else _after(kind, previous)
        arguments = arguments or _agent_arguments(args)
    else:
        env.setdefault("LANEGATE_STATE_DIR", str(state_dir))
        env.setdefault("LANEGATE_POLICY", str(_policy_path(args, state_dir, previous)))
        env.setdefault("LANEGATE_LOG_FILE", str(log_dir / "lanegate.log"))
        if args.host:
            env["LANEGATE_HOST"] = args.host
        if args.port is not None:
            env["LANEGATE_PORT"] = str(args.port)
    drain = env.get("LANEGATE_DRAIN_TIMEOUT", Settings.model_fields["drain_timeout"].default)
    return Install(
        program=program,
        working_directory=str(state_dir),
        log_dir=str(log_dir),
        user_name=user,
        group_name=args.group,
        drain_timeout_s=float(drain),
        arguments=arguments,
        environment=env,
    )


def _render(args: argparse.Namespace, host: Host) -> int:
    kind = KINDS.get(args.kind)
    install = build_install(args, kind, host)
    if kind is None:
        data = launchd.render_newsyslog(preflight.template("newsyslog.conf"), install)
    else:
        data = launchd.render(kind, preflight.template(kind.template), install)
    if args.out is None:
        host.out.write(data.decode())
    elif not args.dry_run:
        args.out.write_bytes(data)
        print(f"wrote {args.out}", file=host.err)
    return 0


def _install(args: argparse.Namespace, kind: ServiceKind, host: Host) -> int:
    """Render, lint, write, then (re)load the job: install and upgrade are the same steps."""
    if kind.system and host.euid != 0 and not args.dry_run:
        print(
            f"lanegate service: a LaunchDaemon needs root: sudo {_argv_hint(args)}", file=host.err
        )
        return 2
    if not kind.system and host.euid == 0:
        print(
            f"lanegate service: {kind.name} is a LaunchAgent of the user who runs it: run it "
            "without sudo, as that user (or install gateway-daemon for a boot-time service)",
            file=host.err,
        )
        return 2
    path = launchd.plist_path(kind, host.home)
    installed = Path(path).read_bytes() if Path(path).exists() else None
    previous = launchd.parse(installed) if installed and args.service_action == "upgrade" else None
    install = build_install(args, kind, host, previous)
    data = launchd.render(kind, preflight.template(kind.template), install)
    problems = preflight.install_problems(kind, install, args.no_probe, host.probe)
    if problems:
        print(f"lanegate service: not installing {kind.name}:", file=host.err)
        for problem in problems:
            print(f"  {problem}", file=host.err)
        return 1
    if args.dry_run:
        return _dry_run(kind, host, path, data, restart=data == installed)
    if data == installed:  # same plist: launchd's copy is current, a restart is enough
        code, _ = host.run(launchd.restart_command(kind, host.uid))
        if code == 0:
            print(f"{kind.label} restarted ({path} unchanged)", file=host.err)
            return 0
    for directory in (install.log_dir, install.working_directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        if kind.system:  # made by root for a daemon that runs as the user
            shutil.chown(directory, install.user_name, install.group_name)
    if not _write_linted(path, data, host):
        return 1
    host.run(launchd.bootout_command(kind, host.uid))  # not loaded yet: fails, harmlessly
    code = _bootstrap(kind, host, path)
    if code == 0:
        print(f"{kind.label} loaded from {path}; logs in {install.log_dir}", file=host.err)
        print(f"check it: lanegate service status {kind.name}", file=host.err)
    return code


def _uninstall(args: argparse.Namespace, kind: ServiceKind, host: Host) -> int:
    path = launchd.plist_path(kind, host.home)
    command = launchd.bootout_command(kind, host.uid)
    if args.dry_run:
        print(launchd.quote_command(command), file=host.out)
        print(f"rm {path}", file=host.out)
        return 0
    code, output = host.run(command)
    if code != 0:
        print(f"{launchd.quote_command(command)}: {output or code} (not loaded?)", file=host.err)
    Path(path).unlink(missing_ok=True)
    print(f"{kind.label} removed", file=host.err)
    return 0


def _status(kind: ServiceKind, host: Host) -> int:
    command = launchd.status_command(kind, host.uid)
    code, output = host.run(command)
    print(output, file=host.out)
    if code != 0:
        print(
            f"{kind.label} is not loaded ({launchd.quote_command(command)}: {code})", file=host.err
        )
    return 0 if code == 0 else 1


def _bootstrap(kind: ServiceKind, host: Host, path: str) -> int:
    enable, bootstrap = launchd.bootstrap_commands(kind, host.uid, path)
    host.run(enable)
    for attempt in range(BOOTSTRAP_TRIES):
        code, output = host.run(bootstrap)
        if code == 0:
            return 0
        if attempt + 1 < BOOTSTRAP_TRIES:
            host.sleep(1.0)  # launchd may still be tearing the old instance down
    print(f"{launchd.quote_command(bootstrap)} failed ({code}): {output}", file=host.err)
    return 1


def _write_linted(path: str, data: bytes, host: Host) -> bool:
    """Write next to the target, `plutil -lint` it, then rename into place (never half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".lanegate-", suffix=".plist")
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    code, output = host.run(launchd.lint_command(temp))
    if code != 0:
        os.unlink(temp)
        print(f"plutil -lint refused the plist: {output}", file=host.err)
        return False
    os.chmod(temp, 0o644)  # launchd refuses group- or world-writable job files
    os.replace(temp, target)
    return True


def _dry_run(kind: ServiceKind, host: Host, path: str, data: bytes, *, restart: bool) -> int:
    commands = [
        launchd.lint_command(path),
        launchd.bootout_command(kind, host.uid),
        *launchd.bootstrap_commands(kind, host.uid, path),
    ]
    if restart:
        commands = [launchd.restart_command(kind, host.uid)]
    print(
        f"# would write {path} ({len(data)} bytes; `lanegate service render` shows it)",
        file=host.out,
    )
    for command in commands:
        print(launchd.quote_command(command), file=host.out)
    return 0


def _agent_arguments(args: argparse.Namespace) -> tuple[str, ...]:
    arguments = ["--host", args.host or "127.0.0.1", "--port", str(args.port or 8401)]
    if args.key:
        if args.key.startswith("env:"):
            raise ServiceFileError(
                "--key env:… would need the key itself in the plist; use --key sha256:<hex> "
                "(`lanegate keys new agent` prints one)"
            )
        arguments += ["--key", args.key]
    return tuple(arguments)


def _after(kind: ServiceKind, previous: dict[str, Any]) -> tuple[str, ...]:
    """The installed job's arguments after its subcommand."""
    argv = [str(a) for a in previous.get("ProgramArguments", [])]
    return tuple(argv[argv.index(kind.subcommand) + 1 :]) if kind.subcommand in argv else ()


def _parse_env(pairs: Sequence[str]) -> list[tuple[str, str]]:
    parsed = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ServiceFileError(f"--env {pair!r}: write LANEGATE_NAME=VALUE")
        parsed.append((name, value))
    return parsed


def _program() -> tuple[str, ...]:
    """This lanegate, by absolute path: the venv's script, else its python -m gateway.
    (abspath, not resolve: the venv's python is a symlink out of the venv.)"""
    python = os.path.abspath(sys.executable)
    script = Path(python).with_name("lanegate")
    return (str(script),) if script.exists() else (python, "-m", "gateway")


def _policy_path(
    args: argparse.Namespace, state_dir: Path, previous: dict[str, Any] | None
) -> Path:
    """The policy the gateway will serve: --policy, the installed job's, or STATE_DIR's."""
    installed = (previous or {}).get("EnvironmentVariables", {}).get("LANEGATE_POLICY")
    return _absolute(args.policy or Path(installed or state_dir / "policy.yaml"))


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser()))


def _argv_hint(args: argparse.Namespace) -> str:
    return f"lanegate service {args.service_action} {args.kind} --user NAME"


def _home_of(user: str) -> str:
    import pwd

    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return f"/Users/{user}"


def _login_name() -> str:
    import getpass

    return getpass.getuser()
