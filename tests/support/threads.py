"""Worker threads whose failures reach the test.

An `assert` (or any exception) in a plain `threading.Thread` ends that thread only: pytest
sees at most a warning, and the test goes on to pass or to fail for a reason that hides the
real one. A `Worker` keeps what its target raised; `check()` joins it and raises that in the
test's own thread, and `raise_failure()` does so at once while the worker may still run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Worker(threading.Thread):
    """A daemon thread running `target()`; its exception is re-raised by `check()`."""

    def __init__(self, target: Callable[[], object], name: str | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as error:  # noqa: BLE001  handed to the test thread by check()
            self.failure = error

    def raise_failure(self) -> None:
        """Raise what the target raised, if it has ended by raising."""
        if self.failure is not None:
            raise AssertionError(f"worker {self.name} failed: {self.failure!r}") from self.failure

    def check(self, timeout: float) -> None:
        """Join; fail the test if the worker raised or is still running after `timeout`."""
        self.join(timeout)
        self.raise_failure()
        if self.is_alive():
            raise AssertionError(f"worker {self.name} still running after {timeout} s")


def check_all(workers: list[Worker], timeout: float) -> None:
    """Join every worker (each gets `timeout`), then raise the first failure among them."""
    for worker in workers:
        worker.join(timeout)
    for worker in workers:
        worker.check(0)
