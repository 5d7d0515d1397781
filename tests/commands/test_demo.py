"""`lanegate demo` cannot hurt anything: its state stays out of ~/.lanegate, a taken port fails
at once naming who holds it, a child that stops is named, and its banner's commands work."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port

BANNER_END = "Ctrl-C stops all three processes."


def _demo(home: Path, *argv: str, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for name in ("LANEGATE_HOME", "LANEGATE_STATE_DIR", "LANEGATE_ADMIN_KEY"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", *argv],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # What a shell's background job (or a runner) hands its children: SIGINT ignored.
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if sigint_ignored
        else None,
    )


def _banner(demo: subprocess.Popen[str]) -> str:
    assert demo.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            err = demo.stderr.read() if demo.stderr else ""
            raise AssertionError(f"demo ended before its banner:\n{err}")
        lines.append(line)
        if BANNER_END in line:
            return "".join(lines)
    raise AssertionError("no banner within 60 s")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    path.mkdir()
    yield path


def _stop(demo: subprocess.Popen[str]) -> int:
    demo.send_signal(signal.SIGINT)
    try:
        # communicate, not wait: it drains both pipes (a full one would block the demo's exit).
        demo.communicate(timeout=120)  # the gateway drains up to 30 s; a busy machine is slow
    except subprocess.TimeoutExpired:
        demo.kill()  # its children may still hold the pipes: do not read them to the end
        demo.wait()
        raise
    finally:
        for pipe in (demo.stdout, demo.stderr):
            if pipe is not None:
                pipe.close()
    return demo.returncode


def test_the_demo_runs_on_the_ports_asked_with_state_outside_home(
    home: Path, tmp_path: Path
) -> None:
    port, sims = free_port(), (free_port(), free_port())
    state = tmp_path / "state"
    demo = _demo(home, "--port", str(port), "--sim-ports", f"{sims[0]},{sims[1]}",
                 "--state-dir", str(state))  # fmt: skip
    try:
        banner = _banner(demo)
        assert f"sim-mini (local, :{sims[0]}), sim-m4max (remote, :{sims[1]})" in banner
        body = json.dumps({"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body.encode(),
            headers={"content-type": "application/json", "authorization": "Bearer demo"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["x-lanegate-upstream"] == "sim-mini"
        status = re.search(r"status\s+: (.+)", banner)
        assert status is not None  # run exactly as printed, in a shell, from another directory
        done = subprocess.run(
            ["sh", "-c", status.group(1)], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "sim-mini" in done.stdout
    finally:
        assert _stop(demo) == 0
    assert (state / "demo-policy.yaml").exists()
    assert not (home / ".lanegate").exists()


def test_the_default_state_is_a_temporary_directory_removed_at_exit(home: Path) -> None:
    demo = _demo(home, "--port", str(free_port()))
    try:
        banner = _banner(demo)
    finally:
        assert _stop(demo) == 0
    found = re.search(r"state: (\S+?),", banner)
    assert found is not None
    assert not Path(found.group(1)).exists()
    assert not (home / ".lanegate").exists()


def test_ctrl_c_stops_it_even_when_started_with_sigint_ignored(home: Path) -> None:
    """Started from a background job, Python would leave SIGINT ignored and the demo (and its
    children) would run on after Ctrl-C; it installs its own handler instead."""
    demo = _demo(home, "--port", str(free_port()), sigint_ignored=True)
    try:
        _banner(demo)
    finally:
        assert _stop(demo) == 0


def test_a_taken_port_fails_at_once_naming_its_holder(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = _demo(home, "--port", str(port))
        _, err = demo.communicate(timeout=30)
        assert demo.returncode == 1
    assert f"port {port} is already in use by pid {os.getpid()}" in err, err
    assert "--port" in err


def test_a_child_that_stops_is_named_with_its_port(home: Path) -> None:
    sims = (free_port(), free_port())
    demo = _demo(home, "--port", str(free_port()), "--sim-ports", f"{sims[0]},{sims[1]}")
    try:
        _banner(demo)
        pid = _listener_pid(sims[1])
        os.kill(pid, signal.SIGKILL)
        _, err = demo.communicate(timeout=60)
        assert demo.returncode == 1
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert f"sim-m4max (:{sims[1]}) exited with code -9" in err


def _listener_pid(port: int) -> int:
    from gateway.ops.listen import port_holder

    holder = port_holder(port)
    assert holder is not None
    return int(holder.split()[1])


def test_a_second_demo_on_the_same_ports_never_prints_the_banner(home: Path) -> None:
    sims = f"{free_port()},{free_port()}"
    first = _demo(home, "--port", str(free_port()), "--sim-ports", sims)
    try:
        _banner(first)
        second = _demo(home, "--port", str(free_port()), "--sim-ports", sims)
        out, err = second.communicate(timeout=30)
        assert second.returncode == 1 and BANNER_END not in out
        assert "is already in use by pid" in err and "--sim-ports" in err
    finally:
        assert _stop(first) == 0
