"""`lanegate serve`'s server: uvicorn's, with lanegate's own signal handling.

Plain uvicorn, on SIGTERM, closes its listener at once (new clients get ECONNREFUSED instead
of an answer), waits for connections up to a timeout, cancels the rest silently, and finally
re-raises the signal, so the process dies *by* SIGTERM rather than exiting 0. Here:

- SIGTERM or SIGINT starts the drain (`drain.Drain`): the listener stays open; new relay
  requests and queued waiters get 503 + Retry-After + `Connection: close`; idle keep-alive
  connections are closed, busy ones close after their response; `/readyz` says draining.
  Requests in flight go on for up to `LANEGATE_DRAIN_TIMEOUT`; those left then end with the
  stream error event (`gateway_draining`). Then uvicorn's own shutdown runs (close the
  listener, lifespan shutdown: budgets and ledger flushed) and the process exits 0.
- A second SIGTERM or SIGINT skips the wait: what is in flight ends with the error event now,
  then the same shutdown, exit 0. A third stops at once: the lifespan shutdown is skipped (up
  to one second of budget spend may be lost) and the exit code is 1.
- SIGHUP reloads the policy (`reload.PolicyReloader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from gateway.ops.drain import Step
from gateway.serving.exchange import DRAINING

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("lanegate")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def forced(self) -> bool:
        return self.gateway.drain.forced

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Our handlers for the life of `serve`; unlike uvicorn's, nothing is re-raised after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._loop = asyncio.get_running_loop()
        handled = (*STOP_SIGNALS, signal.SIGHUP)
        originals = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler may run in the middle of any loop callback: act from the loop.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.handle_signal, sig)

    def handle_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        gateway = self.gateway
        if sig == signal.SIGHUP:
            gateway.reloader.request(name)
            return
        step = gateway.drain.on_signal(gateway.clock())
        if step is Step.STOP:
            log.warning("%s a third time: stopping now, without the shutdown", name)
            self.should_exit = self.force_exit = True
        elif step is Step.CUT:
            log.warning("%s again: not waiting for the drain", name)
            self.cut()
        else:
            log.warning(
                "%s: draining; %d request(s) being handled get up to %g s (LANEGATE_DRAIN_TIMEOUT)",
                name,
                len(gateway.flow.active),
                gateway.drain.timeout_s,
            )
            self.begin_drain()

    def begin_drain(self) -> None:
        gateway = self.gateway
        for gate in (gateway.runtime.gate, gateway.runtime.remote_gate):
            if gate is not None:
                gate.close(lambda lane: gateway.drain.refusal(gateway.clock()))
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle: closed now; busy: closed after its response

    def cut(self) -> None:
        """End every request still being handled, streams with the error event."""
        for exchange in list(self.gateway.flow.active):
            exchange.interrupt(DRAINING)

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        gateway = self.gateway
        step = gateway.drain.tick(gateway.clock(), len(gateway.flow.active))
        if step is Step.CUT:
            log.warning(
                "drain timeout: ending %d request(s) still in flight with an error event",
                len(gateway.flow.active),
            )
            self.cut()
        elif step is Step.STOP:
            log.info("drained; shutting down")
        return step is Step.STOP
