"""Watch this process's open file descriptors against its limit, and say so before it runs out.

When the gateway runs out of descriptors (EMFILE), the event loop cannot report it as such: on
uvloop, libuv accepts each pending connection on a reserved descriptor and closes it at once
(clients see a reset, nothing is logged); on asyncio's loop it logs "socket.accept() out of
system resource" and pauses accepting. An upstream connect that hits EMFILE is the relay's
503 `gateway_out_of_files` (never a 502 blamed on the upstream). This watch makes the cause
visible in the log: every `interval_s` it counts open descriptors (`/dev/fd`) and logs an error
when they pass `WARN_FRACTION` of `ulimit -n` (once per crossing; "back below" when they
return), naming the limit to raise.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass

from gateway.ops.periodic import Periodic

log = logging.getLogger("lanegate.fds")

WARN_FRACTION = 0.9
INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class FdReading:
    open: int
    limit: int  # the soft RLIMIT_NOFILE; 0 when unlimited or unknown

    @property
    def pressed(self) -> bool:
        return self.limit > 0 and self.open >= WARN_FRACTION * self.limit


def read_fds() -> FdReading:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 0 if soft == resource.RLIM_INFINITY else int(soft)
    try:
        count = len(os.listdir("/dev/fd"))  # Linux and macOS; includes the listing's own fd
    except OSError:
        count = 0
    return FdReading(count, limit)


class FdWatch:
    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.pressed = False
        self.last = FdReading(0, 0)
        self._periodic = Periodic(self.check, interval_s, name="file descriptor watch")

    def start(self) -> None:
        self._periodic.start(now=True)

    async def stop(self) -> None:
        await self._periodic.stop()

    async def check(self) -> None:
        self.last = reading = read_fds()
        if reading.pressed and not self.pressed:
            log.error(
                "lanegate has %d of %d file descriptors open (ulimit -n): new client "
                "connections will be dropped and upstream connects refused (503 "
                "gateway_out_of_files); raise the limit (launchd: SoftResourceLimits "
                "NumberOfFiles) or find who holds the connections",
                reading.open,
                reading.limit,
            )
        elif self.pressed and not reading.pressed:
            log.warning("file descriptors back below %d%% of the limit", WARN_FRACTION * 100)
        self.pressed = reading.pressed
