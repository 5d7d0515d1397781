"""`lanegate demo`: two simulated Macs and the gateway in front of them, until Ctrl-C.

This is what `make run` starts on a machine with no Mac: a "local" mini and a "remote" pool
member (`lanegate simulate`), and `lanegate serve` with the packaged demo policy.

It cannot hurt anything: its state (ledger, budgets, the policy it serves) lives in a temporary
directory removed at exit, or in `--state-dir`, never in `~/.lanegate`; the simulators take
free ports (or `--sim-ports`); a port already taken fails at once, naming the process that
holds it; a child that stops is named with its port and exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from gateway.ops.listen import port_holder

SIMULATORS = (("sim-mini", "m2-mini-16gb"), ("sim-m4max", "m4-max-64gb"))
# The simulators' addresses in policies/demo.yaml; the demo serves a copy with its own ports.
POLICY_PORTS = (11501, 11502)
GATEWAY_PORT = 8400
DEMO_ADMIN_KEY = "demo-admin"


class DemoError(RuntimeError):
    """Why the demo cannot start or went down; the message names the process or port."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run two simulated Macs and the gateway")
    parser.add_argument("--policy", type=Path, help="default: the packaged demo policy")
    parser.add_argument("--port", type=int, default=GATEWAY_PORT, help="default %(default)s")
    parser.add_argument(
        "--sim-ports", metavar="A,B", help="the simulators' ports (default: two free ones)"
    )
    parser.add_argument(
        "--state-dir", type=Path, help="keep the demo's state here (default: a temporary dir)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on `kill` as on Ctrl-C
    # Ctrl-C even when started from a shell's background job or a runner that ignores SIGINT
    # (the children would inherit the ignored signal and the banner's promise would not hold).
    signal.signal(signal.SIGINT, _interrupt)
    try:
        sim_ports = _sim_ports(args.sim_ports)
        for port in sim_ports:
            _check_free(port, "--sim-ports")
        _check_free(args.port, "--port")
        with _state_dir(args.state_dir) as state:
            _run_in(state, args, sim_ports)
    except KeyboardInterrupt:
        print("\nlanegate demo: stopping", file=sys.stderr)
        return 0
    except DemoError as exc:
        print(f"lanegate demo: {exc}", file=sys.stderr)
        return 1
    return 1  # unreachable: _run_in returns only by raising


def _run_in(state: Path, args: argparse.Namespace, sim_ports: tuple[int, int]) -> None:
    """Start the simulators and the gateway, wait until one stops; stop all before the state
    directory goes away."""
    processes: list[tuple[str, int, subprocess.Popen[bytes]]] = []
    try:
        policy = _write_policy(args.policy, sim_ports, state)
        env = _environment(state)
        for (name, profile), port in zip(SIMULATORS, sim_ports, strict=True):
            argv = ("simulate", "--port", str(port), "--profile", profile)
            processes.append((name, port, _spawn(env, *argv)))
            _wait_ready(f"http://127.0.0.1:{port}/health", processes[-1])
        argv = ("serve", "--policy", str(policy), "--port", str(args.port))
        processes.append(("gateway", args.port, _spawn(env, *argv)))
        _wait_ready(f"http://127.0.0.1:{args.port}/readyz", processes[-1])
        print(_banner(args.port, sim_ports, policy, env["LANEGATE_ADMIN_KEY"]), flush=True)
        _watch(processes)
    finally:
        _stop([process for _, _, process in processes])


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _sim_ports(given: str | None) -> tuple[int, int]:
    if given is None:
        return _free_port(), _free_port()
    try:
        first, second = (int(p) for p in given.split(","))
    except ValueError:
        raise DemoError(f"--sim-ports {given!r}: write two ports, e.g. 11501,11502") from None
    return first, second


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_free(port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return
        except OSError:
            pass
    holder = port_holder(port)
    by = f" by {holder}" if holder else ""
    raise DemoError(f"port {port} is already in use{by}; stop it or pick another ({flag})")


@contextlib.contextmanager
def _state_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="lanegate-demo-") as temp:
        yield Path(temp)


def _write_policy(given: Path | None, ports: tuple[int, int], state: Path) -> Path:
    """The demo policy with the simulators' addresses moved to `ports`, in the state dir."""
    from importlib import resources

    if given is None:
        source = resources.files("gateway.policy").joinpath("examples", "demo.yaml")
        text = source.read_text("utf-8")
    else:
        text = given.read_text("utf-8")
    for old, new in zip(POLICY_PORTS, ports, strict=True):
        address = f"127.0.0.1:{old}"
        if address not in text:
            raise DemoError(f"the demo policy must name its simulators at {address}")
        text = text.replace(address, f"127.0.0.1:{new}")
    path = state / "demo-policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _environment(state: Path) -> dict[str, str]:
    env = os.environ.copy()
    env.setdefault("LANEGATE_ADMIN_KEY", DEMO_ADMIN_KEY)  # inherited by the gateway
    env["LANEGATE_STATE_DIR"] = str(state)  # ledger, budgets: never the real ~/.lanegate
    env["LANEGATE_HOME"] = str(state)
    env.pop("LANEGATE_REDIS_URL", None)  # a demo never joins a real gateway's shared lanes
    return env


def _spawn(env: dict[str, str], *argv: str) -> subprocess.Popen[bytes]:
    # Children ignore Ctrl-C from the terminal; the demo stops them in order.
    argv = (sys.executable, "-m", "gateway", *argv)
    return subprocess.Popen(argv, env=env, start_new_session=True)


def _wait_ready(url: str, child: tuple[str, int, subprocess.Popen[bytes]]) -> None:
    name, port, process = child
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"{name} (:{port}) exited with code {process.returncode} (see above)")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=1),
        ):
            if process.poll() is None:  # our child answered, not someone else on the port
                return
        time.sleep(0.1)
    raise DemoError(f"{name} did not become ready at {url} within 30 s")


def _watch(processes: list[tuple[str, int, subprocess.Popen[bytes]]]) -> None:
    while True:
        for name, port, process in processes:
            if process.poll() is not None:
                raise DemoError(
                    f"{name} (:{port}) exited with code {process.returncode}; stopping the others"
                )
        time.sleep(0.5)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(timeout=35)
        except subprocess.TimeoutExpired:
            process.kill()


def lanegate_command() -> str:
    """How to run this lanegate as printed: its venv's script by absolute path (it may not be
    on PATH), else this Python with -m gateway."""
    script = Path(os.path.abspath(sys.executable)).with_name("lanegate")
    return str(script) if script.exists() else f"{sys.executable} -m gateway"


def _banner(port: int, sims: tuple[int, int], policy: Path, admin_key: str) -> str:
    base = f"http://127.0.0.1:{port}/v1"
    status = (
        f"LANEGATE_ADMIN_KEY={admin_key} {lanegate_command()} status --url http://127.0.0.1:{port}"
    )
    return f"""
lanegate demo is running (policy: {policy}; state: {policy.parent}, removed at exit unless
--state-dir named it)
  OpenAI base URL : {base}
  Ollama base URL : http://127.0.0.1:{port}
  Anthropic       : ANTHROPIC_BASE_URL=http://127.0.0.1:{port} (Messages API, /v1/messages)
  API key         : any key (the demo policy defines no clients yet)
  upstreams       : sim-mini (local, :{sims[0]}), sim-m4max (remote, :{sims[1]})
  dashboard       : http://127.0.0.1:{port}/dashboard (admin key: {admin_key})
  status          : {status}

Try it (Python, openai SDK):
  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="demo")
  for chunk in client.chat.completions.create(
      model="llama3.1:8b", stream=True,
      messages=[{{"role": "user", "content": "Hello"}}]):
      print(chunk.choices[0].delta.content or "", end="", flush=True)

Or the anthropic SDK (what coding agents speak):
  import anthropic
  client = anthropic.Anthropic(base_url="http://127.0.0.1:{port}", api_key="demo")
  with client.messages.stream(model="llama3.1:8b", max_tokens=200,
      messages=[{{"role": "user", "content": "Hello"}}]) as stream:
      for text in stream.text_stream: print(text, end="", flush=True)

Or curl:
  curl -N {base}/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "llama3.1:8b", "stream": true,
         "messages": [{{"role": "user", "content": "Hello"}}]}}'

Ctrl-C stops all three processes.
"""
