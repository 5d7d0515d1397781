"""W3C Trace Context (traceparent, tracestate): which of a client's headers go upstream. Pure.

lanegate is a relay, not a traced service: it forwards a valid context unchanged (no span of
its own, so the upstream's spans hang under the client's) and writes the trace id into the
access log and the ledger row, so one request can be followed across services.

`traceparent` = `version-traceid-parentid-flags` (w3.org/TR/trace-context): lowercase hex,
32 and 16 digits; version `ff` and all-zero ids are invalid; a later version may append
`-...` fields, which are kept. An invalid traceparent is dropped with its tracestate (the
spec's rule). A tracestate is forwarded only beside a valid traceparent, and only when it is
within the spec's limits (32 list members, 512 characters, printable ASCII): anything else
would be a client smuggling bulk upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TRACEPARENT = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<parent>[0-9a-f]{16})-[0-9a-f]{2}"
    r"(?P<rest>-[^\s]*)?$"
)
MAX_TRACESTATE = 512
MAX_MEMBERS = 32
_ZERO_TRACE, _ZERO_PARENT = "0" * 32, "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    traceparent: str
    tracestate: str | None = None

    def headers(self) -> dict[str, str]:
        """What the upstream gets."""
        out = {"traceparent": self.traceparent}
        if self.tracestate is not None:
            out["tracestate"] = self.tracestate
        return out


def trace_context(headers: Iterable[tuple[bytes, bytes]]) -> TraceContext | None:
    """The valid trace context among ASGI headers (lower-case names), or None."""
    parent: bytes | None = None
    states: list[bytes] = []
    for name, value in headers:
        if name == b"traceparent":
            if parent is not None:
                return None  # two traceparents: which one is meant is unknowable
            parent = value
        elif name == b"tracestate":
            states.append(value)  # repeated fields combine into one list
    if parent is None:
        return None
    found = parse_traceparent(parent.decode("latin-1").strip())
    if found is None:
        return None
    state = tracestate(b",".join(states).decode("latin-1")) if states else None
    return TraceContext(found[0], found[1], state)


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, the value to forward) of a valid traceparent, else None."""
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace, parent = match["version"], match["trace"], match["parent"]
    if version == "ff" or trace == _ZERO_TRACE or parent == _ZERO_PARENT:
        return None
    if version == "00" and match["rest"]:
        return None  # version 00 has exactly four fields
    return trace, value


def tracestate(value: str) -> str | None:
    """The tracestate to forward (members trimmed of blanks), or None if it breaks a limit."""
    members = [m.strip() for m in value.split(",") if m.strip()]
    joined = ",".join(members)
    if not members or len(members) > MAX_MEMBERS or len(joined) > MAX_TRACESTATE:
        return None
    if not joined.isascii() or not joined.isprintable() or any("=" not in m for m in members):
        return None
    return joined
