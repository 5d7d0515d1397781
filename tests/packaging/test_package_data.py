"""What the wheel ships besides code: copies of deploy/launchd/ and policies/ (the sources of
truth, where operators and the repo's layout expect them), kept byte-identical here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.paths import REPO

COPIES = [
    (REPO / "deploy" / "launchd", REPO / "gateway" / "ops" / "launchd_templates", "*"),
    (REPO / "policies", REPO / "gateway" / "policy" / "examples", "*.yaml"),
]


def _files(directory: Path, pattern: str) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in directory.glob(pattern)
        if p.is_file() and p.name != "README.md"  # deploy/launchd's README is for readers
    }


@pytest.mark.parametrize(("source", "copy", "pattern"), COPIES, ids=["launchd", "policies"])
def test_the_packaged_copy_is_the_source(source: Path, copy: Path, pattern: str) -> None:
    """After editing a template or example policy: `cp SOURCE/* COPY/` (see the ids)."""
    shipped, original = _files(copy, "*"), _files(source, pattern)
    assert sorted(shipped) == sorted(original), f"cp {source}/{pattern} {copy}/"
    for name, data in original.items():
        assert shipped[name] == data, f"{copy / name} differs from {source / name}: cp it again"
