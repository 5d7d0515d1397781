"""Pure token-budget windows: reserve an estimate before admission, settle the real usage after.

Owns: per-scope spend in fixed windows aligned to the clock (index ``floor(now / seconds)``) for
the minute/hour/day limits of a ``Budget``; the reserve/settle/release arithmetic; refusals with
the seconds until the refusing window ends; the rows the shell persists. Must not: read the
clock (``now`` comes in), do I/O, or grow with traffic.

Reserve. A request reserves one estimate (prompt estimate + max_tokens) in the current window
of every limit of every scope it touches (its lane and its client). It is refused unless, in
every one of those windows, ``settled + reserved + tokens <= limit``; a refusal changes nothing.

Settle. Real usage replaces the reservation in the windows where the reservation was made, even
if the request ended after they rolled: the admission decision was taken against those windows,
and charging the next one would spend a budget nobody checked. So a request that straddles a
boundary costs the window it started in.

Overspend. Reserving never takes a window past its limit, but real usage may beat the estimate
(the prompt estimate was low; completion cannot beat max_tokens). At every moment, for every
window W: ``settled(W) + reserved(W) <= limit(W) + sum(max(0, actual - estimate))`` over the
requests settled into W. The overshoot is charged, so later reservations are refused until W
rolls, and ``remaining`` reports zero rather than a negative number.

Memory. A window is dropped once it has ended and holds no reservation, so the ledger holds about
three windows per scope plus the old windows of requests still in flight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.policy.spec import Budget

ScopeKey = tuple[str, str]  # ("lane", "batch"), ("client", "alice")
WindowKey = tuple[ScopeKey, str, int]  # (scope, window name, window index)

WINDOW_SECONDS: dict[str, float] = {name: s for name, s, _ in Budget(1, 1, 1).limits()}


@dataclass(frozen=True, slots=True)
class Reservation:
    id: int
    scopes: tuple[ScopeKey, ...]
    tokens: int
    windows: tuple[WindowKey, ...]  # where the estimate sits, and where the settle lands


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused; ``retry_after_s`` is the time until ``window`` ends.

    ``requested > limit`` means the request can never fit that window, whatever the wait.
    """

    scope: ScopeKey
    window: str
    limit: int
    used: int  # settled spend in the window
    reserved: int  # estimates of requests in flight
    requested: int
    retry_after_s: float

    @property
    def never_fits(self) -> bool:
        return self.requested > self.limit


@dataclass(frozen=True, slots=True)
class WindowState:
    """One window of one scope, for x-ratelimit-* headers, status pages and metrics."""

    window: str
    limit: int
    used: int
    reserved: int
    remaining: int  # max(0, limit - used - reserved)
    reset_s: float


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Settled spend of one window: an absolute total, so the shell can upsert it."""

    scope: ScopeKey
    window: str
    index: int
    tokens: int


class _Window:
    __slots__ = ("end", "holds", "reserved", "settled")

    def __init__(self, end: float) -> None:
        self.end = end
        self.settled = 0
        self.reserved = 0
        self.holds = 0  # open reservations here (even of 0 tokens): their settle must land here


def _index(now: float, seconds: float) -> int:
    return math.floor(now / seconds)


class BudgetLedger:
    """Spend per (scope, window, index); mutated by calls, the clock passed in."""

    def __init__(self) -> None:
        self._windows: dict[WindowKey, _Window] = {}
        self._open: set[int] = set()  # reservations neither settled nor released
        self._dirty: dict[WindowKey, int] = {}  # settled totals changed since the last drain
        self._next_id = 1
        self._next_prune = math.inf

    def reserve(
        self, scopes: Sequence[tuple[ScopeKey, Budget]], tokens: int, now: float
    ) -> Reservation | Refusal:
        """Reserve ``tokens`` in every limited window of every scope, or refuse and change nothing.

        Of several refusals the one that can never fit wins, then the longest wait: the caller
        should not retry before every refusing window has rolled.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        names = [scope for scope, _ in scopes]
        if len(set(names)) != len(names):
            raise ValueError(f"a scope appears twice: {names}")
        self._prune(now)
        windows: list[WindowKey] = []
        refusals: list[Refusal] = []
        for scope, budget in scopes:
            for name, seconds, limit in budget.limits():
                key = (scope, name, _index(now, seconds))
                window = self._windows.get(key)
                settled, reserved = (window.settled, window.reserved) if window else (0, 0)
                if settled + reserved + tokens > limit:
                    reset = (key[2] + 1) * seconds - now
                    refusals.append(Refusal(scope, name, limit, settled, reserved, tokens, reset))
                windows.append(key)
        if refusals:
            return max(refusals, key=lambda r: (r.never_fits, r.retry_after_s))
        for key in windows:
            window = self._window(key)
            window.reserved += tokens
            window.holds += 1
        reservation = Reservation(self._next_id, tuple(names), tokens, tuple(windows))
        self._next_id += 1
        self._open.add(reservation.id)
        return reservation

    def settle(self, reservation: Reservation, actual_tokens: int, now: float) -> bool:
        """Replace the reservation by real usage (0 if the client left before any token).

        Returns False, changing nothing, if the reservation was already settled or released,
        so a cleanup path that runs twice cannot charge twice.
        """
        if actual_tokens < 0:
            raise ValueError(f"actual_tokens must be >= 0, got {actual_tokens}")
        if not self._close(reservation):
            return False
        for key in reservation.windows:
            window = self._windows[key]
            window.settled += actual_tokens
            if actual_tokens:
                self._dirty[key] = window.settled
        self._prune(now)
        return True

    def release(self, reservation: Reservation) -> bool:
        """Cancel a reservation that never reached upstream; False if already closed."""
        return self._close(reservation)

    def remaining(self, scope: ScopeKey, budget: Budget, now: float) -> list[WindowState]:
        """State of the current window of each limit of ``budget`` for ``scope``."""
        self._prune(now)
        states = []
        for name, seconds, limit in budget.limits():
            index = _index(now, seconds)
            window = self._windows.get((scope, name, index))
            used, reserved = (window.settled, window.reserved) if window else (0, 0)
            left = max(0, limit - used - reserved)
            reset = (index + 1) * seconds - now
            states.append(WindowState(name, limit, used, reserved, left, reset))
        return states

    def drain_settled(self) -> list[SpendRow]:
        """Settled totals of the windows whose spend changed since the last drain."""
        rows = [
            SpendRow(scope, name, index, tokens)
            for (scope, name, index), tokens in self._dirty.items()
        ]
        self._dirty = {}
        return rows

    def load(self, rows: Iterable[SpendRow], now: float) -> None:
        """Restore settled spend after a restart; rows of windows already ended are skipped.

        A row replaces the window's settled total (rows are absolute). Loaded spend is not
        dirty: it came from storage.
        """
        for row in rows:
            seconds = WINDOW_SECONDS.get(row.window)
            if seconds is None:
                raise ValueError(f"unknown window {row.window!r} in {row}")
            if (row.index + 1) * seconds <= now:
                continue
            self._window((row.scope, row.window, row.index)).settled = row.tokens

    def window_count(self) -> int:
        """Windows held in memory (bounded: see the module docstring)."""
        return len(self._windows)

    def _window(self, key: WindowKey) -> _Window:
        window = self._windows.get(key)
        if window is None:
            _, name, index = key
            window = self._windows[key] = _Window((index + 1) * WINDOW_SECONDS[name])
            self._next_prune = min(self._next_prune, window.end)
        return window

    def _close(self, reservation: Reservation) -> bool:
        if reservation.id not in self._open:
            return False
        self._open.remove(reservation.id)
        for key in reservation.windows:
            window = self._windows[key]
            window.reserved -= reservation.tokens
            window.holds -= 1
            if not window.holds:
                # An ended window was kept only for this reservation: let the next call drop it.
                self._next_prune = min(self._next_prune, window.end)
        return True

    def _prune(self, now: float) -> None:
        """Drop ended windows without reservations; cheap until the earliest window ends."""
        if now < self._next_prune:
            return
        self._windows = {key: w for key, w in self._windows.items() if w.end > now or w.holds}
        self._next_prune = min(
            (w.end for w in self._windows.values() if w.end > now), default=math.inf
        )
