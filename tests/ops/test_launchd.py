"""launchd service files and launchctl command lines (gateway.launchd, `lanegate service`).

Rendering is checked by parsing with plistlib; the launchctl commands through an injected
runner that records them (no launchd here). The non-Mac refusal runs the real CLI.
"""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.commands import service
from gateway.ops import launchd
from gateway.ops.launchd import KINDS, Install, ServiceFileError
from tests.support.launchd_host import UID, Recorder, simulator
from tests.support.launchd_host import host_for as _host
from tests.support.launchd_host import service_args as _args
from tests.support.paths import REPO

__all__ = ["simulator"]  # the module's simulator: the local upstream every install probes

TEMPLATES = REPO / "deploy" / "launchd"


def _install(**overrides: Any) -> Install:
    values: dict[str, Any] = {
        "program": ("/Users/ann/lanegate/.venv/bin/lanegate",),
        "working_directory": "/Users/ann/.lanegate",
        "log_dir": "/Users/ann/Library/Logs/lanegate",
        "user_name": "ann",
        "drain_timeout_s": 45.0,
        "environment": {"LANEGATE_POLICY": "/Users/ann/.lanegate/policy.yaml"},
    }
    values.update(overrides)
    return Install(**values)


def _render(kind: str, **overrides: Any) -> dict[str, Any]:
    spec = KINDS[kind]
    if spec.program == "ollama":
        overrides.setdefault("environment", {"OLLAMA_NUM_PARALLEL": "4"})
    data = launchd.render(spec, (TEMPLATES / spec.template).read_text(), _install(**overrides))
    parsed: dict[str, Any] = plistlib.loads(data)
    return parsed


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_plist_parses_and_holds_the_required_keys(kind: str) -> None:
    plist = _render(kind)
    assert set(launchd.REQUIRED_KEYS) <= set(plist)
    assert plist["Label"] == KINDS[kind].label
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["SoftResourceLimits"]["NumberOfFiles"] == launchd.DEFAULT_NUMBER_OF_FILES
    assert plist["ThrottleInterval"] == launchd.DEFAULT_THROTTLE_S
    paths = [plist["ProgramArguments"][0], plist["WorkingDirectory"]]
    paths += [plist["StandardOutPath"], plist["StandardErrorPath"]]
    assert all(p.startswith("/") for p in paths), paths
    assert plist["StandardErrorPath"].startswith("/Users/ann/Library/Logs/lanegate/")


def test_the_gateway_runs_unthrottled_and_outlasts_its_drain() -> None:
    plist = _render("gateway-agent", drain_timeout_s=45.0)
    assert plist["ProcessType"] == "Interactive"
    assert plist["ProgramArguments"] == ["/Users/ann/lanegate/.venv/bin/lanegate", "serve"]
    assert plist["ExitTimeOut"] == 45 + launchd.EXIT_MARGIN_S > 45
    assert plist["EnvironmentVariables"] == {"LANEGATE_POLICY": "/Users/ann/.lanegate/policy.yaml"}
    assert "UserName" not in plist  # a LaunchAgent runs as the logged-in user


def test_the_daemon_runs_as_the_named_user() -> None:
    plist = _render("gateway-daemon", user_name="lanegate", group_name="staff")
    assert (plist["UserName"], plist["GroupName"]) == ("lanegate", "staff")


def test_the_host_agent_runs_lanegate_agent_with_its_arguments() -> None:
    arguments = ("--host", "0.0.0.0", "--port", "8401", "--key", "sha256:" + "a" * 64)
    plist = _render("host-agent", arguments=arguments)
    assert plist["ProgramArguments"][1:] == ["agent", *arguments]
    assert plist["ProcessType"] == "Standard"


@pytest.mark.parametrize("user", ["root", "0", ""])
def test_never_as_root(user: str) -> None:
    with pytest.raises(ServiceFileError, match="root"):
        _render("gateway-daemon", user_name=user)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("program", ("lanegate",)),
        ("working_directory", "state"),
        ("log_dir", "~/Library/Logs"),
    ],
)
def test_relative_paths_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ServiceFileError, match="absolute"):
        _render("gateway-agent", **{field: value})


def test_only_lanegate_variables_go_into_the_plist() -> None:
    with pytest.raises(ServiceFileError, match="LANEGATE_"):
        _render("gateway-agent", environment={"PATH": "/usr/bin"})


def test_values_are_escaped_not_injected() -> None:
    tricky = "/tmp/a&b</string><key>x</key><string>"
    plist = _render("gateway-agent", environment={"LANEGATE_POLICY": tricky})
    assert plist["EnvironmentVariables"] == {"LANEGATE_POLICY": tricky}


def test_plist_problems_names_a_short_exit_timeout_and_a_root_daemon() -> None:
    plist = _render("gateway-daemon")
    plist["ExitTimeOut"] = 30
    plist["UserName"] = "root"
    problems = launchd.plist_problems(KINDS["gateway-daemon"], plist, 45.0)
    assert any("ExitTimeOut 30 s must exceed the drain (45 s)" in p for p in problems)
    assert any("UserName" in p for p in problems)
    del plist["ProcessType"]
    assert launchd.plist_problems(KINDS["gateway-daemon"], plist, 45.0) == [
        "ProcessType is missing"
    ]


def test_newsyslog_entry_names_the_log_files_and_their_owner() -> None:
    text = launchd.render_newsyslog((TEMPLATES / "newsyslog.conf").read_text(), _install())
    rows = [line.split() for line in text.decode().splitlines() if line and line[0] != "#"]
    assert {row[0] for row in rows} >= {
        "/Users/ann/Library/Logs/lanegate/launchd.err.log",
        "/Users/ann/Library/Logs/lanegate/agent.err.log",
    }
    assert all(row[1] == "ann:staff" and "N" in row[6] for row in rows)


@pytest.mark.skipif(shutil.which("plutil") is None, reason="plutil exists only on macOS")
@pytest.mark.parametrize("kind", list(KINDS))
def test_plutil_accepts_the_rendered_plist(kind: str, tmp_path: Path) -> None:
    spec = KINDS[kind]
    path = tmp_path / spec.plist_name
    environment = {"OLLAMA_NUM_PARALLEL": "4"} if spec.program == "ollama" else {}
    install = _install(environment=environment)
    path.write_bytes(launchd.render(spec, (TEMPLATES / spec.template).read_text(), install))
    subprocess.run(["plutil", "-lint", str(path)], check=True)


# -- launchctl command lines ---------------------------------------------------------------


def test_command_lines_per_domain() -> None:
    agent, daemon = KINDS["gateway-agent"], KINDS["gateway-daemon"]
    path = "/Users/ann/Library/LaunchAgents/io.lanegate.gateway.plist"
    assert launchd.plist_path(agent, "/Users/ann") == path
    assert launchd.bootstrap_commands(agent, UID, path) == [
        ["launchctl", "enable", "gui/501/io.lanegate.gateway"],
        ["launchctl", "bootstrap", "gui/501", path],
    ]
    assert launchd.bootout_command(daemon, UID) == [
        "launchctl",
        "bootout",
        "system/io.lanegate.gateway",
    ]
    assert launchd.restart_command(agent, UID) == [
        "launchctl",
        "kickstart",
        "-k",
        "gui/501/io.lanegate.gateway",
    ]
    assert launchd.status_command(daemon, UID) == [
        "launchctl",
        "print",
        "system/io.lanegate.gateway",
    ]
    assert (
        launchd.plist_path(daemon, "/Users/ann")
        == "/Library/LaunchDaemons/io.lanegate.gateway.plist"
    )


def test_install_lints_then_bootstraps_in_the_users_domain(tmp_path: Path) -> None:
    runner = Recorder({"bootout": [3]})  # not loaded yet: launchctl says so, install goes on
    host = _host(tmp_path, runner)
    assert service.main(_args("install", "gateway-agent", "--port", "8411"), host) == 0
    path = tmp_path / "Library" / "LaunchAgents" / "io.lanegate.gateway.plist"
    lint, *launchctl = runner.calls
    assert lint[:2] == ["plutil", "-lint"] and lint[2].startswith(str(path.parent))
    assert launchctl == [
        ["launchctl", "bootout", "gui/501/io.lanegate.gateway"],
        ["launchctl", "enable", "gui/501/io.lanegate.gateway"],
        ["launchctl", "bootstrap", "gui/501", str(path)],
    ]
    plist = plistlib.loads(path.read_bytes())
    assert plist["EnvironmentVariables"]["LANEGATE_PORT"] == "8411"
    assert plist["EnvironmentVariables"]["LANEGATE_STATE_DIR"] == str(tmp_path / ".lanegate")
    assert plist["ProgramArguments"][0] == service._program()[0]
    assert (tmp_path / "Library" / "Logs" / "lanegate").is_dir()
    assert path.stat().st_mode & 0o022 == 0  # launchd refuses group/world-writable job files


def test_bootstrap_is_retried_while_launchd_tears_the_old_job_down(tmp_path: Path) -> None:
    runner = Recorder({"bootstrap": [5, 5]})
    assert service.main(_args("install"), _host(tmp_path, runner)) == 0
    assert [c[1] for c in runner.calls if c[0] == "launchctl"].count("bootstrap") == 3


def test_a_lint_failure_writes_nothing_and_loads_nothing(tmp_path: Path) -> None:
    runner = Recorder({"plutil": [1]})
    assert service.main(_args("install"), _host(tmp_path, runner)) == 1
    assert [c[0] for c in runner.calls] == ["plutil"]
    assert list((tmp_path / "Library" / "LaunchAgents").iterdir()) == []


def test_upgrade_keeps_the_options_and_restarts_when_unchanged(tmp_path: Path) -> None:
    first = Recorder()
    install = _args("install", "--env", "LANEGATE_DRAIN_TIMEOUT=50", "--host", "0.0.0.0")
    assert service.main(install, _host(tmp_path, first)) == 0
    again = Recorder()
    assert service.main(_args("upgrade"), _host(tmp_path, again)) == 0
    assert again.calls == [["launchctl", "kickstart", "-k", "gui/501/io.lanegate.gateway"]]
    path = tmp_path / "Library" / "LaunchAgents" / "io.lanegate.gateway.plist"
    plist = plistlib.loads(path.read_bytes())
    assert plist["EnvironmentVariables"]["LANEGATE_HOST"] == "0.0.0.0"
    assert plist["ExitTimeOut"] == 50 + launchd.EXIT_MARGIN_S


def test_upgrade_to_a_new_venv_rewrites_and_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert service.main(_args("install"), _host(tmp_path, Recorder())) == 0
    monkeypatch.setattr(service, "_program", lambda: ("/opt/lanegate-2/.venv/bin/lanegate",))
    runner = Recorder()
    assert service.main(_args("upgrade"), _host(tmp_path, runner)) == 0
    assert [c[1] for c in runner.calls] == ["-lint", "bootout", "enable", "bootstrap"]
    path = tmp_path / "Library" / "LaunchAgents" / "io.lanegate.gateway.plist"
    assert plistlib.loads(path.read_bytes())["ProgramArguments"][0].startswith("/opt/lanegate-2/")


def test_uninstall_boots_out_and_removes_the_plist(tmp_path: Path) -> None:
    assert service.main(_args("install"), _host(tmp_path, Recorder())) == 0
    runner = Recorder()
    assert service.main(_args("uninstall"), _host(tmp_path, runner)) == 0
    assert runner.calls == [["launchctl", "bootout", "gui/501/io.lanegate.gateway"]]
    assert not (tmp_path / "Library" / "LaunchAgents" / "io.lanegate.gateway.plist").exists()


def test_status_prints_the_job(tmp_path: Path) -> None:
    runner = Recorder({"print": [113]})  # launchctl's "Could not find service"
    host = _host(tmp_path, runner)
    assert service.main(_args("status", "host-agent"), host) == 1
    assert runner.calls == [["launchctl", "print", "gui/501/io.lanegate.agent"]]
    assert "not loaded" in host.err.getvalue()


def test_a_daemon_install_needs_root_and_a_user(tmp_path: Path) -> None:
    runner = Recorder()
    host = _host(tmp_path, runner, euid=UID)
    assert service.main(_args("install", "gateway-daemon"), host) == 2
    assert "sudo" in host.err.getvalue() and runner.calls == []
    root = _host(tmp_path, runner, euid=0)
    assert service.main(_args("install", "gateway-daemon", "--user", "root"), root) == 2
    assert "never runs as root" in root.err.getvalue()


def test_a_launch_agent_is_not_installed_with_sudo(tmp_path: Path) -> None:
    runner = Recorder()
    host = _host(tmp_path, runner, euid=0)
    assert service.main(_args("install", "gateway-agent"), host) == 2
    assert "without sudo" in host.err.getvalue() and runner.calls == []


def test_dry_run_prints_the_commands_even_off_a_mac(tmp_path: Path) -> None:
    runner = Recorder()
    host = _host(tmp_path, runner, platform="linux")
    assert service.main(_args("install", "gateway-daemon", "--dry-run", "--user", "ann"), host) == 0
    lines = host.out.getvalue().splitlines()
    assert lines[1:] == [
        "plutil -lint /Library/LaunchDaemons/io.lanegate.gateway.plist",
        "launchctl bootout system/io.lanegate.gateway",
        "launchctl enable system/io.lanegate.gateway",
        "launchctl bootstrap system /Library/LaunchDaemons/io.lanegate.gateway.plist",
    ]
    assert runner.calls == []


def test_the_host_agent_key_must_be_a_hash_not_a_secret(tmp_path: Path) -> None:
    host = _host(tmp_path, Recorder())
    args = _args("render", "host-agent", "--host", "0.0.0.0", "--key", "env:AGENT_KEY")
    assert service.main(args, host) == 2
    assert "sha256" in host.err.getvalue()


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the refusal off macOS")
@pytest.mark.parametrize("action", ["install", "uninstall", "status", "upgrade"])
def test_off_a_mac_the_real_cli_says_so_and_exits_2(action: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "service", action],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "launchd exists only on macOS" in done.stderr
    assert "lanegate service render" in done.stderr


def test_render_works_anywhere_and_writes_out(tmp_path: Path) -> None:
    out = tmp_path / "gw.plist"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "service", "render", "--user", "ann", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert plistlib.loads(out.read_bytes())["Label"] == "io.lanegate.gateway"
