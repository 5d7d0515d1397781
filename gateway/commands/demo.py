"""`lanegate demo`: two simulated Macs and the gateway in front of them, until Ctrl-C.

This is what `make run` starts on a machine with no Mac: a "local" mini and a "remote" pool
member (`lanegate simulate`), and `lanegate serve` with `policies/demo.yaml`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SIMULATORS = (("sim-mini", 11501, "m2-mini-16gb"), ("sim-m4max", 11502, "m4-max-64gb"))
GATEWAY_PORT = 8400
DEMO_ADMIN_KEY = "demo-admin"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run two simulated Macs and the gateway")
    parser.add_argument("--policy", default="policies/demo.yaml")
    parser.add_argument("--port", type=int, default=GATEWAY_PORT)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on `kill` as on Ctrl-C
    processes: list[subprocess.Popen[bytes]] = []
    os.environ.setdefault("LANEGATE_ADMIN_KEY", DEMO_ADMIN_KEY)  # inherited by the gateway
    try:
        for name, port, profile in SIMULATORS:
            processes.append(_spawn("simulate", "--port", str(port), "--profile", profile))
            _wait_ready(f"http://127.0.0.1:{port}/health", name, processes[-1])
        processes.append(_spawn("serve", "--policy", args.policy, "--port", str(args.port)))
        _wait_ready(f"http://127.0.0.1:{args.port}/readyz", "gateway", processes[-1])
        print(_banner(args.port), flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        print("lanegate demo: a process stopped; shutting the others down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nlanegate demo: stopping", file=sys.stderr)
        return 0
    except RuntimeError as exc:
        print(f"lanegate demo: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop(processes)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _spawn(*argv: str) -> subprocess.Popen[bytes]:
    # Children ignore Ctrl-C from the terminal; the demo stops them in order.
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *argv],
        env=os.environ.copy(),
        start_new_session=True,
    )


def _wait_ready(url: str, name: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} (see above)")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not become ready at {url} within 30 s")


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(timeout=35)
        except subprocess.TimeoutExpired:
            process.kill()


def _banner(port: int) -> str:
    base = f"http://127.0.0.1:{port}/v1"
    here = Path.cwd()
    admin_key = os.environ.get("LANEGATE_ADMIN_KEY", DEMO_ADMIN_KEY)
    return f"""
lanegate demo is running (policy: {here / "policies/demo.yaml"})
  OpenAI base URL : {base}
  Ollama base URL : http://127.0.0.1:{port}
  Anthropic       : ANTHROPIC_BASE_URL=http://127.0.0.1:{port} (Messages API, /v1/messages)
  API key         : any key (the demo policy defines no clients yet)
  upstreams       : sim-mini (local, :11501), sim-m4max (remote, :11502)
  dashboard       : http://127.0.0.1:{port}/dashboard (admin key: {admin_key})
  status          : LANEGATE_ADMIN_KEY={admin_key} lanegate status --url http://127.0.0.1:{port}

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
