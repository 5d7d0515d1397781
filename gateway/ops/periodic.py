"""A background task that runs one step every few seconds until the app stops it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Periodic:
    def __init__(self, step: Callable[[], Awaitable[None]], interval_s: float) -> None:
        self.step = step
        self.interval_s = interval_s
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
            await self.step()
            await asyncio.sleep(self.interval_s)
