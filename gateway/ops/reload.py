"""Hot reload of the policy: on SIGHUP, on a change of the file, and on `POST /admin/reload`.

The new file is read and fully validated first (off the event loop); a policy that fails keeps
the old one serving, and the error (file, line, field) is logged, kept in
`PolicyReloader.last_error` for `/admin/status`, and returned to the admin call. A valid one is
swapped in one synchronous step: clients of added or changed upstreams are opened, the lane
gate is reconfigured in place (in-flight slots keep counting, waiters of removed lanes are
refused), and the gateway swaps its one `Runtime` reference for a new one (gateway/runtime.py).
Requests in flight keep the runtime they started with. Clients of removed or replaced
upstreams are closed once every request that was being handled at the swap has finished; the
offload loop and host sampler are rebuilt when their inputs changed. Settings (`LANEGATE_*`:
listen address, state dir, limits) need a restart.

The file is polled (`Periodic`, every second: read and sha256 a few KB) rather than watched
with watchfiles: polling one path sees atomic renames and symlink swaps the same way on macOS
and Linux, needs no thread, and adds no direct dependency. `FileWatch` waits for an edit to
settle over two polls, so a reload lands 1-2 s after the save.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import BadRequest, GatewayError, shape_for_path
from gateway.ops.periodic import Periodic
from gateway.policy import PolicyError
from gateway.policy.change import FileWatch, PolicyChange, access_changes, diff
from gateway.policy.loader import PolicyProblem, check_policy_text
from gateway.policy.spec import Policy
from gateway.policy.yaml_bounds import MAX_POLICY_BYTES, TooLarge, check_byte_count
from gateway.upstreams.client import UpstreamClient

if TYPE_CHECKING:
    from gateway.runtime import Runtime
    from gateway.serving.exchange import Exchange
    from gateway.view import GatewayView

log = logging.getLogger("lanegate.reload")

POLL_S = 1.0


class PolicyReloader:
    def __init__(self, gateway: GatewayView, path: Path, poll_s: float = POLL_S) -> None:
        self.gateway = gateway
        self.path = Path(path)
        self.watch = FileWatch(loaded=None)
        self._periodic = Periodic(self._poll, poll_s)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._retiring: set[UpstreamClient] = set()
        self.last_error: str | None = None  # the last refusal (file, line, field), until a success
        # The last reload that changed who may call: {version, at, changes}, kept for status.
        self.last_access_change: dict[str, Any] | None = None

    def start(self) -> None:
        """Watch the file, when the policy in use was read from it (`lanegate serve`)."""
        if self.gateway.policy.source != str(self.path):
            return
        # Unreadable right after it was loaded? Then the first readable content loads.
        with contextlib.suppress(PolicyError):
            self.watch.loaded = _digest(_read_bytes(self.path))
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        retiring, self._retiring = list(self._retiring), set()
        await asyncio.gather(*(client.aclose() for client in retiring))

    async def reload(self, trigger: str) -> PolicyChange:
        """Load, validate and swap; raises PolicyError (old policy kept) or a GatewayError."""
        gateway = self.gateway
        if gateway.drain.refusing:
            raise gateway.drain.refusal(gateway.clock())
        async with self._lock:
            try:
                raw = await asyncio.to_thread(_read_bytes, self.path)
                self.watch.loaded = _digest(raw)  # the watch need not load this content again
                policy = await asyncio.to_thread(_validate, raw, str(self.path))
            except PolicyError as exc:
                self.last_error = str(exc)
                log.error("policy reload (%s) refused, the old one stays:\n%s", trigger, exc)
                raise
            previous = gateway.policy
            change = self._swap(policy)
        version, summary = gateway.runtime.version, change.summary()
        log.info("policy reloaded (%s): version %d; %s", trigger, version, summary)
        self._note_access(previous, policy, trigger)
        return change

    def _note_access(self, old: Policy, new: Policy, trigger: str) -> None:
        """A reload that changes who may call is logged as a warning and kept for status."""
        changes = access_changes(old, new)
        if not changes:
            return
        runtime = self.gateway.runtime
        self.last_access_change = {
            "version": runtime.version,
            "at": runtime.loaded_at,
            "changes": list(changes),
        }
        log.warning(
            "policy reload (%s): who may call changed (version %d):\n  %s",
            trigger,
            runtime.version,
            "\n  ".join(changes),
        )

    def request(self, trigger: str) -> None:
        """Reload in the background (SIGHUP); the outcome is logged and kept for status."""
        self._spawn(self._reload_logged(trigger))

    async def endpoint(self, request: Request) -> Response:
        """`POST /admin/reload` (admin key): 200 with the change, or 400 with the file's errors."""
        shape = shape_for_path(request.url.path)
        try:
            self.gateway.runtime.auth.check_admin(request.headers.raw)
            change = await self.reload("admin")
        except PolicyError as exc:
            field = next((p.field for p in exc.problems if p.field), None)
            error: GatewayError = BadRequest(
                f"the policy was not reloaded (the old one stays active): {exc}",
                code="invalid_policy",
                param=field,
            )
            return Response(error.body(shape), error.status, media_type="application/json")
        except GatewayError as error:
            return Response(error.body(shape), error.status, media_type="application/json")
        body = {
            "status": "reloaded",
            "policy_version": self.gateway.runtime.version,
            "changes": change.summary(),
        }
        return JSONResponse(body)

    # -- the swap -------------------------------------------------------------------------------
    def _swap(self, policy: Policy) -> PolicyChange:
        """Everything a request can see changes here, with no await in between."""
        gateway = self.gateway
        change = diff(gateway.policy, policy)
        replaced: list[UpstreamClient] = []
        for name in (*change.upstreams.added, *change.upstreams.changed):
            old = gateway.clients.get(name)
            gateway.clients[name] = gateway.client_factory(policy.upstream(name))
            if old is not None:
                replaced.append(old)
        removed = [(name, gateway.clients[name]) for name in change.upstreams.removed]
        previous = gateway.runtime
        gateway.swap(gateway.build_runtime(policy, previous))
        self.last_error = None
        if replaced or removed:
            self._retiring.update(replaced + [client for _, client in removed])
            self._spawn(self._retire(replaced, removed, set(gateway.flow.active)))
        if change.offload:
            self._spawn(self._restart_offload(previous, gateway.runtime))
        if change.upstreams.added or change.upstreams.changed:
            self._spawn(gateway.discovery.refresh())  # their models now, not in 30 s
        return change

    async def _retire(
        self,
        replaced: list[UpstreamClient],
        removed: list[tuple[str, UpstreamClient]],
        handled: set[Exchange],
    ) -> None:
        """Close old clients once the requests handled at the swap (the only ones that could
        still pick them) have all finished."""
        tasks = {exchange.task for exchange in handled if exchange.task is not None}
        if tasks:
            await asyncio.wait(tasks)
        for name, client in removed:
            if self.gateway.clients.get(name) is client:  # not re-added by a later reload
                del self.gateway.clients[name]
                self.gateway.discovery.inventories.pop(name, None)
        clients = replaced + [client for _, client in removed]
        self._retiring.difference_update(clients)
        await asyncio.gather(*(client.aclose() for client in clients))
        log.info("policy reload: closed %d old upstream client(s)", len(clients))

    async def _restart_offload(self, old: Runtime, new: Runtime) -> None:
        """The new runtime came with a new sampler and offload loop: stop the old, start them."""
        if old.offload is not None:
            await old.offload.stop()
        await old.sampler.stop()
        await new.sampler.start()
        if new.offload is not None:
            await new.offload.start()
        log.warning("policy reload: offload loop rebuilt (state starts again at local)")

    # -- background ---------------------------------------------------------------------------
    async def _poll(self) -> None:
        try:
            raw = await asyncio.to_thread(_read_bytes, self.path)
        except PolicyError:
            return  # missing mid-rename, or unreadable: the next poll looks again
        if self.watch.observe(_digest(raw)):
            await self._reload_logged("file change")

    async def _reload_logged(self, trigger: str) -> None:
        # Logged by reload (or refused while draining); status shows reload_error.
        with contextlib.suppress(PolicyError, GatewayError):
            await self.reload(trigger)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _read_bytes(path: Path) -> bytes:
    """The file, read no further than the bound the loader enforces on its text."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_POLICY_BYTES + 1)
        check_byte_count(len(raw))
        return raw
    except TooLarge as exc:
        raise PolicyError([PolicyProblem(str(path), None, "", str(exc))]) from exc
    except OSError as exc:
        raise PolicyError([PolicyProblem(str(path), None, "", f"cannot read: {exc}")]) from exc


def _validate(raw: bytes, source: str) -> Policy:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([PolicyProblem(source, None, "", "not UTF-8 text")]) from exc
    checked = check_policy_text(text, source)
    for warning in checked.warnings:
        log.warning("policy: %s", warning)
    return checked.policy


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
