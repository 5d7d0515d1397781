"""One offload decision for all gateways: a leader decides, every gateway follows.

Owns: the leader lease (`SET NX PX`, renewed by the leader on every sample), publishing the
leader's state to a key that expires unless renewed, reading it on the other gateways, and the
operator's mode, stored in Redis so a POST to any gateway reaches the leader. Must not: decide
when to offload (the pure `offload.OffloadController` does, on the leader) or route requests.

Why a leader rather than each gateway deciding from shared signals: the controller's inputs are
this host's memory signals and the interactive p95 TTFT it measures, and its sustain/recover
timers are state; several controllers fed the same signals would still flip at different
samples and disagree for a while. One leader gives one answer; the cost is one round trip per
sample interval per gateway, and a failover that takes up to three sample intervals (the
leader key's TTL) when the leader dies. Every gateway keeps running its own controller on its
own signals, so while Redis is down (or before any leader has published) it routes by its own
decision, as a single gateway would.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.offload.controller import Mode
from gateway.shared import scripts as redis_scripts
from gateway.shared.plan import OffloadView, decode_view, encode_view
from gateway.shared.state import REDIS_DOWN, SharedState

if TYPE_CHECKING:
    from gateway.offload.loop import OffloadLoop

log = logging.getLogger("lanegate.offload")

LEADER_TTL_SAMPLES = 3  # the leader key outlives this many missed samples


class SharedOffload:
    def __init__(self, shared: SharedState, loop: OffloadLoop) -> None:
        self.shared = shared
        self.loop = loop
        self.ttl_ms = max(1000, int(loop.policy.offload_sample_s * 1000 * LEADER_TTL_SAMPLES))
        self.view: OffloadView | None = None  # the leader's, as last read or published
        self.leading = False
        self._lead = shared.client.register_script(redis_scripts.LEAD)

    async def step(self) -> None:
        """One sample: this gateway's own controller, then lead (publish) or follow (read)."""
        await self._apply_shared_mode()
        self.loop.tick()
        await self.sync()

    def mode_set(self, mode: Mode) -> None:
        """An operator set the mode here: store it for the leader, and publish if we lead."""
        self.shared.spawn(self._store_mode(mode))

    async def sync(self) -> None:
        if not self.shared.healthy:
            self.view, self.leading = None, False
            return
        keys = self.shared.keys
        view: OffloadView | None
        try:
            reply = await self._lead(keys=[keys.offload_leader], args=[self._id, self.ttl_ms])
            leading = bool(reply)
            if leading:
                view = self._own_view()
                await self.shared.client.set(keys.offload_state, encode_view(view), px=self.ttl_ms)
            else:
                view = decode_view(await self.shared.client.get(keys.offload_state))
        except REDIS_DOWN as error:
            self.shared.mark_down(error)
            self.view, self.leading = None, False
            return
        if leading != self.leading:
            verb = "is now" if leading else "is no longer"
            log.warning("offload: this gateway %s the offload leader", verb)
        self.view, self.leading = view, leading

    @property
    def _id(self) -> str:
        return self.shared.gateway_id

    def _own_view(self) -> OffloadView:
        controller = self.loop.controller
        return OffloadView(
            controller.state.value, controller.mode.value, controller.last_reason, self._id
        )

    async def _apply_shared_mode(self) -> None:
        """Adopt the mode an operator set on any gateway (each controller keeps it too)."""
        if not self.shared.healthy:
            return
        try:
            raw = await self.shared.client.get(self.shared.keys.offload_mode)
        except REDIS_DOWN as error:
            self.shared.mark_down(error)
            return
        if raw is None:
            return
        try:
            mode = Mode(raw.decode() if isinstance(raw, bytes) else raw)
        except ValueError:
            return
        if mode is not self.loop.controller.mode:
            self.loop.apply_mode(mode)

    async def _store_mode(self, mode: Mode) -> None:
        if not self.shared.healthy:
            return
        try:
            await self.shared.client.set(self.shared.keys.offload_mode, mode.value)
        except REDIS_DOWN as error:
            self.shared.mark_down(error)
            return
        await self.sync()
