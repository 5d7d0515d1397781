"""Helpers that let `policy check` say everything at once: near names and prunable fields.

`did_you_mean` names the closest known name to a misspelt one (difflib's ratio, as Python's
own "Did you mean" hints do). `field_names` lists the fields a mapping may hold at an error's
location, walked through the pydantic models, so an unknown field can be matched to the field
that was meant. `without` removes a field from the raw YAML data, so the loader can validate
the rest of the file in the same run and check cross-references too. Must not: read files or
know about line numbers (the loader maps locations to lines).
"""

from __future__ import annotations

import copy
import difflib
import types
from collections.abc import Iterable
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

Location = tuple[str | int, ...]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'max_queue'?` for the closest known name, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def field_names(root: type[BaseModel], loc: Location) -> tuple[str, ...]:
    """The field names (as written in YAML) of the model that holds `loc[-1]`, or ()."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None:
            return ()
        if isinstance(part, int):
            continue  # a list position: the items are the model found for the list
        field = _field(model, part)
        model = None if field is None else _model_in(field.annotation)
    if model is None:
        return ()
    return tuple(info.alias or name for name, info in model.model_fields.items())


def _field(model: type[BaseModel], name: str) -> Any:
    for field_name, info in model.model_fields.items():
        if name in (field_name, info.alias):
            return info
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `list[X]`, `X | None`, `Annotated[X, ...]`, `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = get_origin(annotation)
    if origin is None:
        return None
    args = get_args(annotation)
    if origin in (Union, types.UnionType, list, tuple) or str(origin).endswith("Annotated"):
        candidates = args
    elif origin is dict:
        candidates = args[1:]
    else:
        candidates = args
    for arg in candidates:
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def without(data: Any, loc: Location) -> Any | None:
    """A copy of `data` with the mapping key at `loc` removed, or None when `loc` is not a
    key of a mapping inside a list or mapping (only single fields are pruned, never whole
    list items: later positions keep their numbers, so line numbers stay right)."""
    if not loc or not isinstance(loc[-1], str):
        return None
    pruned = copy.deepcopy(data)
    parent = pruned
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return None
    if not isinstance(parent, dict) or loc[-1] not in parent:
        return None
    del parent[loc[-1]]
    return pruned
