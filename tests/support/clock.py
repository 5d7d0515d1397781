"""A clock a test moves by hand, for code that takes `clock: Callable[[], float]`."""

from __future__ import annotations


class FakeClock:
    """`clock()` reads the time; `advance(s)` (or setting `now`) moves it.

    With `tick`, every read first moves the clock on by `tick` seconds, for code that should
    see time pass between two reads (a sampler taking one sample a second).
    """

    def __init__(self, now: float = 0.0, *, tick: float = 0.0) -> None:
        self.now = now
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
