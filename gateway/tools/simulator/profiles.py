"""Loads simulator profiles from YAML into frozen `engine.Profile` objects, validated once.

Owns the file format (a top-level `profiles:` mapping of name to fields, byte sizes written
as `16GiB` or `4.7GB`) and its error messages, which name the file, the profile and the
field. Must not hold state: callers get new objects and swap them in whole.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError
from gateway.tools.simulator.engine import ModelSpec, Profile

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_PROFILE_FIELDS = {f.name: f for f in dataclasses.fields(Profile)}
_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelSpec)}


class ProfileError(ConfigError, ValueError):
    """A profile file that cannot be used; the message says where and why."""


def packaged_profiles_path() -> Path:
    """The profiles.yaml shipped inside the package."""
    return Path(str(resources.files("gateway.tools.simulator").joinpath("profiles.yaml")))


def load_profiles(path: Path | None = None) -> dict[str, Profile]:
    """Parse and validate every profile in `path` (default: the packaged file)."""
    source = path or packaged_profiles_path()
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{source}: {exc}") from exc
    entries = raw.get("profiles") if isinstance(raw, Mapping) else None
    if not isinstance(entries, Mapping):
        raise ProfileError(f"{source}: expected a top-level 'profiles:' mapping")
    profiles: dict[str, Profile] = {}
    for name, fields in entries.items():
        try:
            profiles[str(name)] = profile_from_mapping(str(name), fields)
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"{source}: profile {name!r}: {exc}") from exc
    return profiles


def profile_from_mapping(name: str, fields: Any) -> Profile:
    """Build one profile; unknown keys and wrong types are errors, not silently dropped."""
    if not isinstance(fields, Mapping):
        raise TypeError("expected a mapping of profile fields")
    values: dict[str, Any] = {}
    for key, value in fields.items():
        spec = _PROFILE_FIELDS.get(str(key))
        if spec is None or key == "name":
            raise ValueError(f"unknown field {key!r}")
        values[spec.name] = _convert(spec.name, value)
    values.setdefault("accept_any_model", values.get("mode") == "fixed")
    return Profile(name=name, **values)


def _convert(key: str, value: Any) -> Any:
    if key == "models":
        if not isinstance(value, list):
            raise TypeError("models must be a list")
        return tuple(_model(item) for item in value)
    if key.endswith("_bytes"):
        return parse_bytes(value, key)
    default = _PROFILE_FIELDS[key].default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{key} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key} must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{key} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _model(item: Any) -> ModelSpec:
    if isinstance(item, str):
        return ModelSpec(name=item)
    if not isinstance(item, Mapping) or "name" not in item:
        raise TypeError("each model needs at least a name")
    unknown = set(item) - _MODEL_FIELDS
    if unknown:
        raise ValueError(f"unknown model field(s) {sorted(unknown)}")
    values = dict(item)
    if "size_bytes" in values:
        values["size_bytes"] = parse_bytes(values["size_bytes"], "size_bytes")
    if "capabilities" in values:
        values["capabilities"] = tuple(values["capabilities"])
    return ModelSpec(**values)


def parse_bytes(value: Any, key: str = "size") -> int:
    """`16GiB`, `4.7GB`, `128KiB` or a plain integer, as a byte count."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value)) if isinstance(value, str | float) else None
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{key}: cannot read {value!r} as a byte size")
    return int(float(match.group(1)) * _UNITS[unit])
