"""Model discovery: what each upstream has and has loaded, read periodically off the request
path through the same pooled client the relay uses.

The answers feed upstream selection (prefer hosts where the model is resident), the merged
`/v1/models`, capacity checks (llama.cpp's `/slots` against the policy's `max_concurrency`)
and the ladder's model digest. A failing upstream keeps its last inventory, marked with the
error; discovery never raises into the gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError
from gateway.ops.periodic import Periodic
from gateway.policy.spec import UpstreamKind, UpstreamSpec
from gateway.upstreams import model_lists
from gateway.upstreams.client import UPSTREAM_ERRORS, UpstreamClient
from gateway.upstreams.model_lists import Inventory

log = logging.getLogger("lanegate.discovery")

READ_TIMEOUT_S = 5.0
# An upstream that fails us, or answers something that is not the JSON it documents.
DISCOVERY_ERRORS: tuple[type[BaseException], ...] = (*UPSTREAM_ERRORS, ValueError)
MAX_BODY = 4 * 1024 * 1024

# (upstream name, reachable, detail): each refresh doubles as an active health probe.
ProbeHook = Callable[[str, bool, str], None]


class AnswerError(ConfigError, ValueError):
    """The upstream answered, but not with the JSON it documents: reachable, not healthy data."""


@dataclass(frozen=True)
class UpstreamInventory:
    upstream: str
    inventory: Inventory = field(default_factory=Inventory)
    slots: int | None = None  # real parallel slots, where the upstream reveals them
    read_at: float | None = None
    error: str | None = None
    unreachable: bool = False  # the error was a connection failure or a timeout


async def get_json(client: UpstreamClient, path: str) -> Any:
    """GET `path` on the upstream and parse its JSON body (bounded in size and time)."""
    async with asyncio.timeout(READ_TIMEOUT_S):
        response = await client.open("GET", path, None, {"accept": "application/json"})
        try:
            if response.status != 200:
                raise AnswerError(f"GET {path} answered {response.status}")
            body = bytearray()
            async for chunk in response.chunks():
                body += chunk
                if len(body) > MAX_BODY:
                    raise AnswerError(f"GET {path}: body over {MAX_BODY} bytes")
            return json.loads(body)
        finally:
            await response.aclose()


async def read_inventory(client: UpstreamClient, now: float) -> UpstreamInventory:
    spec = client.spec
    try:
        inventory, slots = await _read(client, spec)
    except DISCOVERY_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}"
        unreachable = not isinstance(exc, ValueError)  # OSError or TimeoutError
        return UpstreamInventory(spec.name, read_at=now, error=error, unreachable=unreachable)
    return UpstreamInventory(spec.name, inventory, slots, now)


async def _read(client: UpstreamClient, spec: UpstreamSpec) -> tuple[Inventory, int | None]:
    if spec.kind is UpstreamKind.OLLAMA:
        tags = model_lists.ollama_tags(await get_json(client, "/api/tags"))
        resident = model_lists.ollama_resident(await get_json(client, "/api/ps"))
        return Inventory(tags.models, resident & tags.models or resident, tags.digests), None
    if spec.kind is UpstreamKind.LMSTUDIO:
        return model_lists.lmstudio_models(await get_json(client, "/api/v0/models")), None
    if spec.kind is UpstreamKind.LLAMACPP:
        models = model_lists.openai_models(await get_json(client, "/v1/models"), all_resident=True)
        slots = model_lists.llamacpp_slots(await get_json(client, "/slots"))
        return models, slots
    return model_lists.openai_models(await get_json(client, "/v1/models")), None


class Discovery:
    """Refreshes every upstream's inventory every `interval_s` (started by the app lifespan)."""

    def __init__(
        self,
        clients: Mapping[str, UpstreamClient],
        clock: Callable[[], float],
        interval_s: float = 30.0,
        on_probe: ProbeHook | None = None,
    ) -> None:
        self.clients = clients
        self.on_probe = on_probe
        self.clock = clock
        self.interval_s = interval_s
        self.inventories: dict[str, UpstreamInventory] = {}
        self._periodic = Periodic(self.refresh, interval_s)

    async def refresh(self) -> None:
        results = await asyncio.gather(
            *(read_inventory(client, self.clock()) for client in self.clients.values())
        )
        for result in results:
            if result.upstream not in self.clients:  # removed by a policy reload meanwhile
                continue
            self._keep(result)
            if self.on_probe is not None:
                self.on_probe(result.upstream, not result.unreachable, result.error or "")

    def _keep(self, result: UpstreamInventory) -> None:
        previous = self.inventories.get(result.upstream)
        if result.error is not None:
            if previous is None or previous.error != result.error:
                log.warning("discovery: %s: %s", result.upstream, result.error)
            if previous is not None:  # keep what we knew, say it is stale
                result = UpstreamInventory(
                    result.upstream,
                    previous.inventory,
                    previous.slots,
                    previous.read_at,
                    result.error,
                )
        else:
            self._check_slots(result)
        self.inventories[result.upstream] = result

    def _check_slots(self, result: UpstreamInventory) -> None:
        spec = self.clients[result.upstream].spec
        if result.slots is not None and result.slots != spec.max_concurrency:
            log.warning(
                "upstream %s reports %d parallel slots but the policy says max_concurrency: %d; "
                "set it to %d",
                spec.name,
                result.slots,
                spec.max_concurrency,
                result.slots,
            )

    def start(self) -> None:
        self._periodic.start(now=True)

    async def stop(self) -> None:
        await self._periodic.stop()
