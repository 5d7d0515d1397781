"""What each kind of upstream says about its models and slots. Pure parsers over JSON.

Ollama: `/api/tags` (installed models, with digests) and `/api/ps` (resident ones).
LM Studio: `/api/v0/models` (`state`: "loaded" / "not-loaded"). llama.cpp: `/v1/models` (one
model, always resident) and `/slots` (its real parallel slots). mlx_lm and any OpenAI-style
server: `/v1/models`. Odd shapes give empty answers, never exceptions: discovery must not be
able to break the gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Inventory:
    models: frozenset[str] = frozenset()
    resident: frozenset[str] = frozenset()
    digests: Mapping[str, str] = field(default_factory=dict)  # model → hex sha256, when known


def _items(obj: Any, key: str) -> list[Mapping[str, Any]]:
    items = obj.get(key) if isinstance(obj, Mapping) else None
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def _name(item: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = item.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def ollama_tags(obj: Any) -> Inventory:
    models, digests = set(), {}
    for item in _items(obj, "models"):
        name = _name(item, "name", "model")
        if name is None:
            continue
        models.add(name)
        digest = item.get("digest")
        if isinstance(digest, str) and digest:
            digests[name] = digest.removeprefix("sha256:")
    return Inventory(frozenset(models), frozenset(), digests)


def ollama_resident(obj: Any) -> frozenset[str]:
    return frozenset(n for item in _items(obj, "models") if (n := _name(item, "name", "model")))


def lmstudio_models(obj: Any) -> Inventory:
    models, resident = set(), set()
    for item in _items(obj, "data"):
        name = _name(item, "id")
        if name is None:
            continue
        models.add(name)
        if item.get("state") == "loaded" or item.get("loaded_instances"):
            resident.add(name)
    return Inventory(frozenset(models), frozenset(resident))


def openai_models(obj: Any, *, all_resident: bool = False) -> Inventory:
    """`/v1/models`; llama.cpp serves one loaded model, so everything listed is resident."""
    models = frozenset(n for item in _items(obj, "data") if (n := _name(item, "id")))
    return Inventory(models, models if all_resident else frozenset())


def llamacpp_slots(obj: Any) -> int | None:
    """The number of parallel slots llama-server reports on `/slots` (None if unreadable)."""
    if not isinstance(obj, list) or not obj:
        return None
    return sum(1 for slot in obj if isinstance(slot, Mapping) and "id" in slot) or None


def merged_openai_list(
    inventories: Mapping[str, Inventory], logical: Mapping[tuple[str, str], str]
) -> dict[str, Any]:
    """One OpenAI `/v1/models` list over every upstream, under the names clients use.

    `logical` maps (upstream, upstream's model id) to the policy's logical name, so a model
    LM Studio calls `meta-llama-3.1-8b-instruct` is listed once as `llama3.1:8b`. `owned_by`
    names the upstreams that have it.
    """
    owners: dict[str, list[str]] = {}
    for upstream, inventory in inventories.items():
        for model in sorted(inventory.models):
            owners.setdefault(logical.get((upstream, model), model), []).append(upstream)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": ",".join(sorted(hosts))}
        for name, hosts in sorted(owners.items())
    ]
    return {"object": "list", "data": data}
