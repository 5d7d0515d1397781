"""The live progress line while a ladder runs: rung, elapsed, live p95 TTFT, errors.

On a terminal it redraws one line; piped, it prints a line every few seconds, so a CI log
shows progress without thousands of lines.
"""

from __future__ import annotations

from typing import TextIO

from gateway.ops.periodic import Periodic
from gateway.tools.ladder.runner import LoadRunner
from gateway.tools.ladder.stats import percentile


class Progress:
    def __init__(self, runner: LoadRunner, out: TextIO, *, rungs: int, rung_seconds: float) -> None:
        self.runner = runner
        self.out = out
        self.rungs = rungs
        self.rung_seconds = rung_seconds
        self.tty = out.isatty()
        self.rung: tuple[int, float] | None = None
        self.index = 0
        self._periodic = Periodic(self._step, 0.5 if self.tty else 5.0)

    def on_rung(self, concurrency: int, started_s: float) -> None:
        if self.tty and self.rung is not None:
            self.out.write("\n")
        self.rung = (concurrency, started_s)
        self.index += 1

    def line(self) -> str:
        if self.rung is None:
            return "starting"
        concurrency, started = self.rung
        rows = [row for row in self.runner.rows if row.rung == concurrency]
        ttfts = [row.ttft_s for row in rows if row.ttft_s is not None]
        p95 = percentile(ttfts, 0.95)
        errors = sum(1 for row in rows if not row.ok and not row.interrupted)
        elapsed = self.runner.now() - started
        shown = "–" if p95 is None else f"{p95 * 1000:.0f} ms"
        return (
            f"rung {self.index}/{self.rungs} concurrency {concurrency}: "
            f"{min(elapsed, self.rung_seconds):4.1f}/{self.rung_seconds:g} s, "
            f"{len(rows)} done, p95 TTFT {shown}, {errors} errors"
        )

    def start(self) -> None:
        self._periodic.start()

    async def _step(self) -> None:
        self.show()

    def show(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + self.line())
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()

    async def stop(self) -> None:
        await self._periodic.stop()
        if self.tty:
            self.out.write("\n")
