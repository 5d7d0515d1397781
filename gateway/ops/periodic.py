"""A background task that runs one step every few seconds until the app stops it.

A step that raises is logged with its traceback and runs again at the next interval: no
background task of the gateway dies silently (issue 18: a ledger writer stopped for good on
one OverflowError, and nothing said so until shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("lanegate.periodic")


class Periodic:
    def __init__(
        self, step: Callable[[], Awaitable[None]], interval_s: float, *, name: str = ""
    ) -> None:
        self.step = step
        self.interval_s = interval_s
        self.name = name or getattr(step, "__qualname__", repr(step))
        self.failures = 0  # steps that raised since start (each one logged)
        self._task: asyncio.Task[None] | None = None

    def start(self, *, now: bool = False) -> None:
        """Start stepping; `now` runs the first step at once instead of after one interval."""
        self._task = asyncio.create_task(self._loop(now))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self, now: bool) -> None:
        if not now:
            await asyncio.sleep(self.interval_s)
        while True:
            try:
                await self.step()
            except Exception:
                self.failures += 1
                log.exception(
                    "background task %r failed (%d so far); it runs again in %g s",
                    self.name,
                    self.failures,
                    self.interval_s,
                )
            await asyncio.sleep(self.interval_s)
