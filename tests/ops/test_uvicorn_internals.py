"""What gateway/ops/server.py and ops/http_protocol.py take from uvicorn's internals.

pyproject bounds uvicorn (`<0.56`) because these are not public API. Before raising the bound,
run this module and tests/ops/test_server.py against the new version: a rename upstream fails
here by name instead of as a gateway that no longer drains or limits headers."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import uvicorn
from packaging.requirements import Requirement
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tests.support.paths import REPO

SERVER = ("capture_signals", "on_tick", "run", "should_exit", "force_exit", "server_state")
PROTOCOL = (
    "connection_made", "connection_lost", "data_received", "on_message_begin",
    "on_headers_complete", "send_400_response", "url", "headers", "logger",
)  # fmt: skip


def test_the_installed_uvicorn_is_within_the_tested_range() -> None:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [Requirement(d) for d in deps if Requirement(d).name == "uvicorn"]
    assert pin.specifier.contains(version("uvicorn")), (pin, version("uvicorn"))
    assert any(s.operator == "<" for s in pin.specifier), "uvicorn needs an upper bound"


def test_the_server_hooks_we_override_exist() -> None:
    server = uvicorn.Server(uvicorn.Config(app=None))
    missing = [name for name in SERVER if not hasattr(server, name)]
    assert missing == []
    assert inspect.iscoroutinefunction(uvicorn.Server.on_tick)


def test_the_protocol_methods_we_extend_exist() -> None:
    source = inspect.getsource(HttpToolsProtocol)
    missing = [n for n in PROTOCOL if f"def {n}" not in source and f"self.{n}" not in source]
    assert missing == []
