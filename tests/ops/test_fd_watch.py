"""The file-descriptor watch: EMFILE's cause, said in the log before it bites (issue 18)."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from collections.abc import Iterator

import pytest

from gateway.ops.fd_watch import WARN_FRACTION, FdReading, FdWatch, read_fds


def test_pressure_starts_at_the_fraction_and_never_without_a_limit() -> None:
    assert not FdReading(89, 100).pressed and FdReading(90, 100).pressed
    assert not FdReading(10**6, 0).pressed  # unlimited


def test_the_reading_counts_what_this_process_opens() -> None:
    before = read_fds().open
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(10)]
    try:
        assert read_fds().open - before == 10
    finally:
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def near_the_limit() -> Iterator[None]:
    """Lower the soft limit so the descriptors open now are past WARN_FRACTION of it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(read_fds().open / WARN_FRACTION), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_crossing_is_logged_once_and_so_is_coming_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = FdWatch()
    with caplog.at_level(logging.WARNING, "lanegate.fds"):
        with near_the_limit():
            await watch.check()
            await watch.check()
        await watch.check()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "ulimit -n" in errors[0].getMessage()
    assert "back below" in caplog.records[-1].getMessage()
