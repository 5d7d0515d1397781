"""Listening sockets: loopback means both 127.0.0.1 and ::1 on the same port.

`localhost` often resolves to ::1 first, so a gateway bound to 127.0.0.1 alone looks down to
half the clients on a Mac. Binding both, on one port, needs the sockets made by hand.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
from pathlib import Path

LOOPBACK_NAMES = ("localhost", "loopback")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    if host in LOOPBACK_NAMES:
        return _bind_loopback_pair(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return [_bind(family, host, port)]


def _bind_loopback_pair(port: int) -> list[socket.socket]:
    first = _bind(socket.AF_INET, "127.0.0.1", port)
    if not socket.has_ipv6:
        return [first]
    try:
        second = _bind(socket.AF_INET6, "::1", first.getsockname()[1])
    except OSError:
        return [first]  # no IPv6 loopback on this host (some containers)
    return [first, second]


def _bind(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def port_holder(port: int) -> str | None:
    """Who listens on TCP `port` here, as `pid N (command line)`, for an error message; None
    when it cannot be told (lsof on macOS, /proc on Linux; other users' processes may hide)."""
    pid = _listener_lsof(port) or _listener_proc(port)
    if pid is None:
        return None
    return f"pid {pid} ({_command(pid)})" if _command(pid) else f"pid {pid}"


def _listener_lsof(port: int) -> int | None:
    lsof = shutil.which("lsof")
    if lsof is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        argv = [lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fp"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3, check=False)
        for line in done.stdout.splitlines():
            if line.startswith("p") and line[1:].isdigit():
                return int(line[1:])
    return None


def _listener_proc(port: int) -> int | None:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for fd_dir in Path("/proc").glob("[0-9]*/fd") if inodes else ():
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
    return None


def _command(pid: int) -> str:
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        argv = ["ps", "-o", "command=", "-p", str(pid)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3, check=False)
        return done.stdout.strip()
    return ""
