"""Which of gateway/'s modules one streamed chat passes through, counted by a profiler hook.

Starts a simulated Mac (`lanegate simulate`), runs the gateway in this process under uvicorn on
a free port, sends one streamed chat through it to warm up, then a second one with
`sys.setprofile` recording the module of every Python function called in the process until
the stream ends. Prints the gateway modules that ran, by folder, and their count
(docs/architecture.md quotes it).

    python -m tests.bench.request_path
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app
from gateway.policy.loader import load_policy
from gateway.settings import Settings
from tests.support.policies import write_policy
from tests.support.processes import free_port, running, start_lanegate

CHAT = {
    "model": "llama3.1:8b",
    "stream": True,
    "messages": [{"role": "user", "content": "hello"}],
    "max_tokens": 8,
}


async def _chat(base: str) -> None:
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{base}/v1/chat/completions", json=CHAT) as response,
    ):
        async for _ in response.aiter_bytes():
            pass


async def traced(base: str) -> set[str]:
    modules: set[str] = set()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            modules.add(frame.f_globals.get("__name__", ""))

    await _chat(base)  # warm: imports, pools, first-time work
    sys.setprofile(hook)
    try:
        await _chat(base)
    finally:
        sys.setprofile(None)
    return {m for m in modules if m.startswith("gateway.")}


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lanegate-path-"))
    sim_port = free_port()
    args = ["simulate", "--profile", "m2-mini-16gb"]  # start_lanegate adds `--port sim_port`
    service = start_lanegate("sim-path", args, ready_path="/health", port=sim_port, log_dir=work)
    with running(service):
        upstream = {"name": "mini", "base_url": f"http://127.0.0.1:{sim_port}", "kind": "ollama"}
        policy = load_policy(write_policy(work / "policy.yaml", [upstream]))
        port = free_port()
        app = create_app(policy, Settings(state_dir=work / "state", access_log=False))
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
            await asyncio.sleep(0.05)
        try:
            modules = await traced(f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            await task
    by_folder: dict[str, list[str]] = defaultdict(list)
    for name in sorted(modules):
        parts = name.split(".")
        by_folder[parts[1] if len(parts) > 2 else "(root)"].append(parts[-1])
    for folder, names in sorted(by_folder.items()):
        print(f"{folder:10} {', '.join(names)}")
    print(f"{len(modules)} gateway modules ran for one streamed chat")


if __name__ == "__main__":
    asyncio.run(main())
