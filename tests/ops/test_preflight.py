"""`lanegate service install` refuses a job that would crash-loop, and Ollama's own service.

Installs run against the module's real simulator (the policy's local upstream) with launchctl
and plutil recorded (tests/ops/test_launchd.py's Recorder and host); nothing here needs a Mac.
"""

from __future__ import annotations

import plistlib
import stat
from pathlib import Path

import pytest

from gateway.commands import service
from gateway.ops import launchd
from tests.support.launchd_host import UID, Recorder, simulator
from tests.support.launchd_host import host_for as _host
from tests.support.launchd_host import service_args as _args
from tests.support.launchd_host import write_home_policy as _policy
from tests.support.processes import free_port

__all__ = ["simulator"]  # the module's simulator fixture, shared with test_launchd

AGENTS = Path("Library") / "LaunchAgents"


def _refused(tmp_path: Path, *argv: str) -> str:
    runner = Recorder()
    host = _host(tmp_path, runner)
    assert service.main(_args(*argv), host) == 1
    assert runner.calls == [], "refused before plutil or launchctl ran"
    assert not (tmp_path / AGENTS).exists() or list((tmp_path / AGENTS).iterdir()) == []
    return str(host.err.getvalue())


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_broken_policy_is_refused_naming_file_line_and_field(
    tmp_path: Path, dry_run: list[str]
) -> None:
    path = _policy(tmp_path)
    path.write_text(path.read_text().replace("max_concurrency: 4", "max_concurrency: -1"))
    err = _refused(tmp_path, "install", *dry_run)
    assert f"{path}:" in err and "upstreams[0].max_concurrency" in err, err


def test_a_missing_policy_points_at_init(tmp_path: Path) -> None:
    err = _refused(tmp_path, "install", "--policy", str(tmp_path / "nowhere.yaml"))
    assert "lanegate init" in err


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_local_upstream_that_does_not_answer_is_refused(
    tmp_path: Path, dry_run: list[str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    _policy(tmp_path, down)
    err = _refused(tmp_path, "install", *dry_run)
    assert f"upstream mini (ollama) at {down}/api/version" in err and "--no-probe" in err


def test_no_probe_installs_while_the_upstream_is_still_down(tmp_path: Path) -> None:
    _policy(tmp_path, f"http://127.0.0.1:{free_port()}")
    runner = Recorder()
    assert service.main(_args("install", "--no-probe"), _host(tmp_path, runner)) == 0
    assert [c[1] for c in runner.calls] == ["-lint", "bootout", "enable", "bootstrap"]


def test_ollama_takes_its_settings_from_the_policy(tmp_path: Path) -> None:
    _policy(tmp_path, "http://127.0.0.1:11999", slots=6)
    host = _host(tmp_path, Recorder())
    args = _args("render", "ollama-daemon", "--env", "OLLAMA_KEEP_ALIVE=-1")
    assert service.main(args, host) == 0
    plist = plistlib.loads(host.out.getvalue().encode())
    assert plist["EnvironmentVariables"] == {
        "OLLAMA_HOST": "127.0.0.1:11999",
        "OLLAMA_NUM_PARALLEL": "6",
        "OLLAMA_KEEP_ALIVE": "-1",
        "OLLAMA_MAX_LOADED_MODELS": launchd.OLLAMA_MAX_LOADED_MODELS,
        "OLLAMA_MODELS": f"{tmp_path}/.ollama/models",
    }
    assert plist["ProgramArguments"][1:] == ["serve"] and plist["UserName"] == "ann"


def test_each_kind_takes_only_its_own_variables(tmp_path: Path) -> None:
    host = _host(tmp_path, Recorder())
    assert service.main(_args("render", "gateway-agent", "--env", "OLLAMA_HOST=x"), host) == 2
    assert service.main(_args("render", "ollama-agent", "--env", "LANEGATE_PORT=1"), host) == 2
    assert "only OLLAMA_* variables" in host.err.getvalue()


def test_ollama_needs_its_binary(tmp_path: Path) -> None:
    missing = tmp_path / "no-ollama"
    err = _refused(tmp_path, "install", "ollama-agent", "--ollama-bin", str(missing))
    assert f"no Ollama server binary at {missing}" in err
    binary = tmp_path / "ollama"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    runner = Recorder()
    args = _args("install", "ollama-agent", "--ollama-bin", str(binary))
    assert service.main(args, _host(tmp_path, runner)) == 0
    assert runner.calls[-1] == [
        "launchctl",
        "bootstrap",
        f"gui/{UID}",
        str(tmp_path / AGENTS / "io.lanegate.ollama.plist"),
    ]
