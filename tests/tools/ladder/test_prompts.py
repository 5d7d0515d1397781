"""The ladder's prompts: reproducible, distinct, about the asked length (pure)."""

from __future__ import annotations

import pytest

from gateway.tools.ladder.prompts import make_prompts


def test_prompts_are_reproducible_distinct_and_about_the_right_length() -> None:
    a, b = make_prompts(7, 64), make_prompts(7, 64)
    assert a.prompts == b.prompts and a.sha256 == b.sha256
    assert make_prompts(8, 64).sha256 != a.sha256
    assert len(set(a.prompts)) == len(a.prompts)
    assert all(abs(len(p) / 4 - 64) < 8 for p in a.prompts)  # chars/4, as servers estimate
    assert a[len(a.prompts)] == a[0]
    with pytest.raises(ValueError):
        make_prompts(1, 4)
