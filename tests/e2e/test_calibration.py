"""The simulator's shape against llama-server's, rung by rung, with generous tolerances.

One sweep on each (30-60 s in all, see `calibration`). What must hold on both engines:
requests beyond the slot count wait for a whole wave (TTFT jumps at 8 streams on 4 slots),
aggregate throughput grows sublinearly up to the slot count and is flat past it. And the
simulator must track the real numbers: TTFT and throughput per rung within a factor, and
TTFT growth from 1 to 16 streams within a factor of llama-server's. Tolerances are wide
because the two CPU cores are shared: a busy neighbour slows llama-server, not the simulator;
rungs where llama-server got under 90% of a core are run again, and if it stays starved the
comparison is skipped with a message rather than failed.
The table lands in test-output/calibration.md for docs/testing.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.calibration import (
    ATTEMPTS,
    SLOTS,
    Calibration,
    RungStats,
    StreamTiming,
    by_concurrency,
    calibrate,
    first_stall,
    markdown_table,
    starved,
    summarise,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180, func_only=True)]


@pytest.fixture(scope="module")
def calibration(llama_binary: Path, output_dir: Path) -> Calibration:
    result = calibrate(output_dir)
    (output_dir / "calibration.md").write_text(markdown_table(result) + "\n")
    problems = starved(result)
    if problems:
        pytest.skip(
            "calibration: llama-server was starved of CPU by other processes even after "
            f"{ATTEMPTS} attempts ({'; '.join(problems)}), so its numbers would measure them; "
            "rerun on a quieter machine (table in test-output/calibration.md)"
        )
    llama = by_concurrency(result.llama)
    within_slots = [llama[c].aggregate_tps for c in sorted(llama) if c <= SLOTS]
    if first_stall(within_slots) is not None:
        pytest.skip(
            f"calibration: on this host ({result.machine}) llama-server's throughput does not "
            "grow by 10% a rung within its slots "
            f"({', '.join(f'{x:.0f}' for x in within_slots)} tok/s at 1..{SLOTS} streams: its "
            "batched decode step costs about what the streams it serves save), so the "
            "simulator's profile cannot be checked against it here (table in "
            "test-output/calibration.md)"
        )
    return result


def engines(cal: Calibration) -> dict[str, dict[int, RungStats]]:
    return {"llama-server": by_concurrency(cal.llama), "simulator": by_concurrency(cal.sim)}


def within(a: float, b: float, factor: float) -> bool:
    return b / factor <= a <= b * factor


def test_summary_of_two_waves() -> None:
    """The summary itself, on hand-made timings: 8 streams on 4 slots, second wave late."""
    first = [StreamTiming(0.1, 0.5, 32, 70, headers_s=0.02) for _ in range(4)]
    second = [StreamTiming(0.6, 1.0, 32, 70, headers_s=0.52) for _ in range(4)]
    stats = summarise(8, first + second, slots=4)
    assert stats.wave_ratio == pytest.approx(6.0)
    assert stats.ttft_max_s == 0.6 and stats.ttft_p50_s == pytest.approx(0.35)
    assert stats.aggregate_tps == pytest.approx(256.0)
    assert stats.per_stream_tps == pytest.approx(31 / 0.4)
    assert stats.header_lead_s == pytest.approx(0.08)


def test_batching_pays_only_by_the_ladders_ten_percent() -> None:
    """The host check that picks what the real-engine tests expect: a rung gaining 3% on the one
    before (as a CI host did) has stalled as much as one that lost throughput."""
    assert first_stall([110.0, 130.0, 150.0]) is None
    assert first_stall([110.0, 80.0, 115.0]) == 1
    assert first_stall([3.41, 3.51, 4.3]) == 1
    assert first_stall([100.0, 111.0, 121.0]) == 2  # +11%, then +9%
    assert first_stall([100.0]) is None


def test_a_second_wave_past_the_slots(calibration: Calibration) -> None:
    for name, rungs in engines(calibration).items():
        assert rungs[2 * SLOTS].wave_ratio > 2.0, (name, rungs[2 * SLOTS])
        assert rungs[4 * SLOTS].wave_ratio > rungs[2 * SLOTS].wave_ratio, name


def test_throughput_sublinear_to_the_slots_then_flat(calibration: Calibration) -> None:
    for name, rungs in engines(calibration).items():
        one, full = rungs[1].aggregate_tps, rungs[SLOTS].aggregate_tps
        assert 1.2 * one < full < SLOTS * one, (name, one, full)
        assert rungs[SLOTS].per_stream_tps < rungs[1].per_stream_tps, name
        for past in (2 * SLOTS, 4 * SLOTS):
            assert within(rungs[past].aggregate_tps, full, 1.25), (name, past, rungs[past])


def test_simulator_tracks_llama_server_per_rung(calibration: Calibration) -> None:
    sim = by_concurrency(calibration.sim)
    for real in calibration.llama:
        mine = sim[real.concurrency]
        assert within(mine.aggregate_tps, real.aggregate_tps, 1.5), (real, mine)
        assert within(mine.ttft_p50_s, real.ttft_p50_s, 2.0), (real, mine)
        assert within(mine.ttft_max_s, real.ttft_max_s, 2.0), (real, mine)
        assert within(mine.per_stream_tps, real.per_stream_tps, 1.5), (real, mine)
    assert within(calibration.sim[0].prompt_tokens, calibration.llama[0].prompt_tokens, 1.15)


def test_headers_when_a_slot_takes_the_request(calibration: Calibration) -> None:
    """llama-server answers 200 as a slot takes the request, a prefill before the first token;
    a client timing "time to headers" must see the same on the simulator. (2.5x: a burst of
    2-4 arrivals is often split over two batches by llama-server, which starts a batch the
    moment its first task arrives; the simulator prefills a same-tick burst together.)"""
    sim = by_concurrency(calibration.sim)
    for real in calibration.llama:
        lead = sim[real.concurrency].header_lead_s
        assert real.header_lead_s > 0.02, real
        assert within(lead, real.header_lead_s, 2.5), (real, sim[real.concurrency])


def test_ttft_growth_from_one_to_sixteen_streams(calibration: Calibration) -> None:
    real, sim = by_concurrency(calibration.llama), by_concurrency(calibration.sim)
    real_growth = real[16].ttft_p50_s / real[1].ttft_p50_s
    sim_growth = sim[16].ttft_p50_s / sim[1].ttft_p50_s
    assert within(sim_growth, real_growth, 2.5), (real_growth, sim_growth)
