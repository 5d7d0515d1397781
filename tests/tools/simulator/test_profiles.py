"""The packaged profiles load, validate, and sit where their calibration comments say."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.commands import simulate
from gateway.tools.simulator import engine
from gateway.tools.simulator.profiles import ProfileError, load_profiles, parse_bytes

PROFILES = load_profiles()


def test_packaged_profiles_are_all_there() -> None:
    assert set(PROFILES) >= {"m2-mini-16gb", "m4-max-64gb", "fast", "zero", "knee-demo"}
    fast, zero = PROFILES["fast"], PROFILES["zero"]
    assert (fast.mode, fast.ttft_ms, fast.chunk_interval_ms) == ("fixed", 20.0, 5.0)
    assert (zero.mode, zero.ttft_ms, zero.chunk_interval_ms) == ("fixed", 0.0, 0.0)
    assert fast.accept_any_model and not PROFILES["m2-mini-16gb"].accept_any_model
    assert PROFILES["knee-demo"].slots == 4


def test_m2_mini_matches_its_published_figures() -> None:
    m2 = PROFILES["m2-mini-16gb"]
    assert 20 <= m2.decode_tps <= 30 and 150 <= m2.prefill_tps <= 400
    assert m2.kv_bytes_per_token == 128 * 1024 and m2.slots == 4
    long_context = 8192

    def swapping(contexts: int) -> bool:
        return engine.swap_used_bytes(m2, contexts * long_context) > 0

    knee = next(n for n in range(1, 20) if swapping(n))
    assert 6 <= knee <= 8


def test_m4_max_is_faster_and_does_not_swap_at_full_slots() -> None:
    m2, m4 = PROFILES["m2-mini-16gb"], PROFILES["m4-max-64gb"]
    assert m4.decode_tps >= 2.5 * m2.decode_tps and m4.slots > m2.slots
    assert engine.swap_used_bytes(m4, m4.slots * 32_768) == 0


def test_parse_bytes_units() -> None:
    assert parse_bytes("16GiB") == 16 * 2**30
    assert parse_bytes("4.7GB") == 4_700_000_000
    assert parse_bytes("128 KiB") == 131_072
    assert parse_bytes(42) == 42
    with pytest.raises(ValueError, match="ram_budget_bytes"):
        parse_bytes("lots", "ram_budget_bytes")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("profiles:\n  x:\n    slotz: 3\n", "unknown field 'slotz'"),
        ("profiles:\n  x:\n    slots: many\n", "slots must be an integer"),
        ("profiles:\n  x:\n    slots: 0\n", "slots must be >= 1"),
        ("profiles:\n  x:\n    models: [{family: llama}]\n", "needs at least a name"),
        ("nothing: here\n", "top-level 'profiles:'"),
        ("profiles: [\n", "profiles.yaml"),
    ],
)
def test_bad_files_say_where_and_why(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(body)
    with pytest.raises(ProfileError, match=message) as err:
        load_profiles(path)
    assert str(path) in str(err.value)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    return parser.parse_args(["simulate", *argv])


def test_cli_defaults_and_overrides() -> None:
    args = _parse()
    assert (args.host, args.port, args.profile) == ("127.0.0.1", 11500, "m2-mini-16gb")
    profile = simulate.resolve_profile(_parse("--profile", "fast", "--ttft-ms", "3", "--seed", "9"))
    assert (profile.name, profile.ttft_ms, profile.seed, profile.chunk_interval_ms) == (
        "fast",
        3.0,
        9,
        5.0,
    )
    assert simulate.resolve_profile(_parse("--slots", "8")).slots == 8


def test_cli_rejects_unknown_profiles_and_bad_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse("--profile", "nope")
    assert args.func(args) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    args = _parse("--slots", "0")
    assert args.func(args) == 2
