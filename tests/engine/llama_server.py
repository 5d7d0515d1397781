"""Run a real llama.cpp ``llama-server`` for end-to-end tests and benchmarks.

Standard library only, so it can be imported from pytest fixtures, benchmark
scripts and ad-hoc shells alike::

    from tests.engine.llama_server import LlamaServer, ensure_llama_server, ensure_model

    binary = ensure_llama_server()          # builds once (~6 min on 2 cores), then cached
    model = ensure_model("small")           # random-weight GGUF, cached
    with LlamaServer(binary, model, parallel=4) as srv:
        srv.base_url                        # "http://127.0.0.1:<port>"

Everything is cached under ``$LANEGATE_CACHE`` (default ``~/.cache/lanegate``):

    llama-server-<version>/bin/llama-server
    llama-server-<version>/vocab/ggml-vocab-*.gguf
    llama-server-<version>/BUILD_INFO
    models/tiny-llama-<size>.gguf
"""

from __future__ import annotations

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
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

ENGINE_DIR = Path(__file__).resolve().parent
BUILD_SCRIPT = ENGINE_DIR / "build_llama_server.sh"
MAKE_MODEL = ENGINE_DIR / "make_tiny_model.py"

# Must match LLAMA_CPP_PYTHON_VERSION in build_llama_server.sh.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DEFAULT_VOCAB = "ggml-vocab-llama-spm.gguf"
MODEL_SIZES = ("small", "large")


def cache_root() -> Path:
    """Root of the lanegate engine cache (``$LANEGATE_CACHE`` or ``~/.cache/lanegate``)."""
    env = os.environ.get("LANEGATE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lanegate"


def server_dir() -> Path:
    """Cache dir of the pinned llama-server build."""
    return cache_root() / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"


def ensure_llama_server() -> Path:
    """Build (first time only) and return the path of the cached ``llama-server``.

    Runs ``build_llama_server.sh``, whose no-op path takes milliseconds.  A first
    build takes several minutes; its progress goes to this process's stderr.
    """
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{BUILD_SCRIPT.name} failed with exit code {result.returncode}; see its stderr above"
        )
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{BUILD_SCRIPT.name} printed no binary path")
    binary = Path(lines[-1])
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{BUILD_SCRIPT.name} reported {binary}, which is not executable")
    return binary


def vocab_path(name: str = DEFAULT_VOCAB) -> Path:
    """Path of a vocab-only GGUF copied from the llama.cpp tree by the build."""
    path = ensure_llama_server().parent.parent / "vocab" / name
    if not path.is_file():
        raise FileNotFoundError(f"vocab file {path} is missing; delete {server_dir()} to rebuild")
    return path


def ensure_model(size: str = "small") -> Path:
    """Create (first time only) and return the tiny random-weight GGUF of ``size``.

    Needs the ``gguf`` and ``numpy`` packages in the running interpreter (the
    project's ``dev`` extra has them).
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"size must be one of {MODEL_SIZES}, not {size!r}")
    out = cache_root() / "models" / f"tiny-llama-{size}.gguf"
    cmd = [
        sys.executable,
        str(MAKE_MODEL),
        "--vocab",
        str(vocab_path()),
        "--out",
        str(out),
        "--size",
        size,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"make_tiny_model.py failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LlamaServerError(RuntimeError):
    """llama-server failed to start or become healthy."""


class LlamaServer:
    """A ``llama-server`` child process bound to 127.0.0.1.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.  Its
    combined stdout/stderr goes to ``log_path`` (a temp file by default), whose
    tail is included in errors.

    ``ctx`` is the *total* KV size: llama-server splits it evenly over the
    ``parallel`` slots (4096 / 4 = 1024 tokens per request by default).  The
    model id reported by the server (``/v1/models``, ``"model"`` in responses)
    is ``alias``, by default the model file's stem, e.g. ``tiny-llama-small``.
    ``embeddings=True`` adds ``--embeddings --pooling mean``; chat completions
    keep working in that mode.
    """

    def __init__(
        self,
        binary: Path | str,
        model: Path | str,
        port: int | None = None,
        parallel: int = 4,
        ctx: int = 4096,
        embeddings: bool = False,
        *,
        threads: int | None = None,
        alias: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60.0,
        log_path: Path | str | None = None,
    ) -> None:
        self.binary = Path(binary)
        self.model = Path(model)
        self.port = port if port is not None else free_port()
        self.parallel = parallel
        self.ctx = ctx
        self.embeddings = embeddings
        self.threads = threads
        self.alias = alias if alias is not None else self.model.stem
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self._log_path = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self._log_file: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- public API ----------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash, no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (e.g. ``/v1/chat/completions``)."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def command(self) -> list[str]:
        """The exact command line used to start the server."""
        cmd = [
            str(self.binary),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "-m",
            str(self.model),
            "--parallel",
            str(self.parallel),
            "-c",
            str(self.ctx),
            "--metrics",
            "--slots",
            "--no-warmup",
        ]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        if self.alias:
            cmd += ["--alias", self.alias]
        if self.embeddings:
            cmd += ["--embeddings", "--pooling", "mean"]
        cmd += self.extra_args
        return cmd

    def start(self) -> LlamaServer:
        """Start the process and wait until ``GET /health`` answers 200."""
        if self.proc is not None:
            raise LlamaServerError("already started")
        if not self.model.is_file():
            raise FileNotFoundError(f"model not found: {self.model}")
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"llama-server-{self.port}-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = self._log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the test run does not hit it first
        )
        try:
            self.wait_healthy(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float) -> None:
        """Poll ``/health`` until 200; raise with the log tail if the process dies."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc is None:
                raise LlamaServerError("not started")
            code = self.proc.poll()
            if code is not None:
                raise LlamaServerError(
                    f"llama-server exited with code {code} during startup\n"
                    f"command: {' '.join(self.command())}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:  # 503 while the model loads
                last_error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        raise LlamaServerError(
            f"llama-server not healthy after {timeout:.0f}s ({last_error})\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit code.

        llama-server does not drain: on SIGTERM it stops generating at once, and
        a stream still open stalls (no more chunks, no ``[DONE]``, connection
        left open) until its client disconnects; only then does the process exit
        (code 0).  Idle, it exits within milliseconds.
        """
        proc, self.proc = self.proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
            code = proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """Everything the server printed so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_text().splitlines()[-lines:]
        return "--- llama-server log (tail) ---\n" + "\n".join(text)

    def cleanup_log(self) -> None:
        """Delete the temp log file (only if this object created it)."""
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    # -- context manager -----------------------------------------------------

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.cleanup_log()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"LlamaServer({self.model.name}, port={self.port}, {state})"
