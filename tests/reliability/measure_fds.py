"""Issue 18, attack 1, as a measurement: the gateway's open file descriptors after N sockets
that each send `Content-Length: 1000000000`, 200 KiB and no key, then wait.

    PYTHONPATH=$PWD python -m tests.reliability.measure_fds 300

Prints the count before and 3 s after; not a test (the count after depends on timing), the
behaviour is tested by test_attacks_clients.py::test_an_early_answer_closes_the_connection.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

from gateway.serving.keys import hash_key
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n"


def main(count: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="lanegate-fds-"))
    clients = f'\nclients:\n  - {{name: a, key: "{hash_key("k" * 40)}"}}\n'
    with ScriptedUpstream(lambda _: Script(chunks=[b"{}"])) as upstream:
        policy = write_policy(out / "p.yaml", [upstream_entry("s", upstream.url)], clients)
        gateway = start_gateway("gw-fds", policy, out, state=out / "state")
        try:
            process = psutil.Process(gateway.process.pid)
            before = process.num_fds()
            sockets = []
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", gateway.port))
                sock.sendall(HEAD + b"x" * 204800)
                sockets.append(sock)
            time.sleep(3)
            after = process.num_fds()
            print(f"gateway fds: {before} before, {after} 3 s after {count} hostile sockets")
            for sock in sockets:
                sock.close()
        finally:
            gateway.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
