"""Listening sockets: loopback means both 127.0.0.1 and ::1 on the same port.

`localhost` often resolves to ::1 first, so a gateway bound to 127.0.0.1 alone looks down to
half the clients on a Mac. Binding both, on one port, needs the sockets made by hand.
"""

from __future__ import annotations

import ipaddress
import socket

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
