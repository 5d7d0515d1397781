"""`ladder.png`: latency against load above, the host's CPU and disk over time below.

Top: p50/p95/p99 TTFT (ms, from zero) against concurrency with the number of samples behind
each rung, throughput on a second axis, the knee marked; with `--mix`, one series per lane.
Bottom: CPU busy % and disk MB/s on the ladder's clock, rung boundaries shaded, so a tail can
be lined up with what the host did. The title names the model, endpoint, lane and date.

matplotlib is an optional extra (`pip install 'lanegate[ladder]'`): it is imported only here,
only when a plot is drawn, and `draw` raises `PlotUnavailable` without it so the ladder still
writes everything else and says how to get the picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.errors import LanegateError
from gateway.tools.ladder.host_summary import SignalRow

INSTALL_HINT = "pip install 'lanegate[ladder]'"
_STYLES = (("p50", "-o"), ("p95", "-s"), ("p99", "-^"))


class PlotUnavailable(LanegateError):
    """matplotlib is not installed; the message says how to get it."""


def draw(report: Mapping[str, Any], path: Path, signals: Sequence[SignalRow] = ()) -> None:
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(f"matplotlib is not installed ({INSTALL_HINT})") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 7), dpi=110, gridspec_kw={"height_ratios": [3, 2]}
    )
    rungs = [r for r in report["rungs"] if r["requests"]]
    if any(len(r["lanes"]) > 1 for r in rungs):
        _lanes(top, rungs)
    else:
        _ladder(top, rungs, report.get("knee"))
    _host(bottom, rungs, signals)
    fig.suptitle(title(report), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def title(report: Mapping[str, Any]) -> str:
    target = report["target"]
    lane = target.get("lane") or (
        f"mix {report['ladder']['mix']}" if report["ladder"].get("mix") else "no lane"
    )
    date = str(report.get("started_at", ""))[:16].replace("T", " ")
    return f"{target['model']} · {target['base_url']} · {lane} · {date} UTC"


def _ladder(ax: Any, rungs: Sequence[Mapping[str, Any]], knee: Mapping[str, Any] | None) -> None:
    xs = [r["concurrency"] for r in rungs]
    for key, style in _STYLES:
        ys = [_nan(r["ttft_ms"][key]) for r in rungs]
        ax.plot(xs, ys, style, label=f"TTFT {key}")
    for r in rungs:
        top = r["ttft_ms"]["p99"]
        if top is not None:
            ax.annotate(
                f"n={r['ttft_samples']}",
                (r["concurrency"], top),
                fontsize=7,
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("TTFT (ms)")
    peaks = [r["ttft_ms"]["p99"] for r in rungs if r["ttft_ms"]["p99"] is not None]
    ax.set_ylim(0, max(peaks, default=1.0) * 1.15)  # room for the n= labels
    rps = ax.twinx()
    rps.plot(xs, [r["throughput_rps"] for r in rungs], "--", color="grey", label="req/s")
    rps.set_ylabel("throughput (completed req/s)")
    rps.set_ylim(bottom=0)
    if knee is not None:
        ax.axvline(knee["concurrency"], color="red", linestyle=":", linewidth=1.5)
        ax.annotate(
            f"knee: {knee['rule']}",
            xy=(knee["concurrency"], 0.55),
            color="red",
            xycoords=("data", "axes fraction"),
            ha="right",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    handles, labels = ax.get_legend_handles_labels()
    extra, extra_labels = rps.get_legend_handles_labels()
    ax.legend(handles + extra, labels + extra_labels, loc="upper left", fontsize=8)


def _lanes(ax: Any, rungs: Sequence[Mapping[str, Any]]) -> None:
    """A mixed step: each lane a group of p50/p95/p99 points, its concurrency and n beside."""
    rung = rungs[-1]
    names = list(rung["lanes"])
    for offset, (key, style) in zip((-0.15, 0.0, 0.15), _STYLES, strict=True):
        ys = [_nan(rung["lanes"][n]["ttft_ms"][key]) for n in names]
        ax.plot([i + offset for i in range(len(names))], ys, style[1:], label=f"TTFT {key}")
    labels = [
        f"{n}\n{_load(rung['lanes'][n])}, n={rung['lanes'][n]['ttft_samples']}" for n in names
    ]
    ax.set_xticks(range(len(names)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("TTFT (ms)")
    ax.legend(loc="upper left", fontsize=8)


def _load(lane: Mapping[str, Any]) -> str:
    rate = lane.get("rate_per_s") or 0
    return f"{rate:g}/s" if rate else f"{lane['concurrency']} in flight"


def _host(ax: Any, rungs: Sequence[Mapping[str, Any]], signals: Sequence[SignalRow]) -> None:
    ts = [s.t_s for s in signals]
    ax.plot(ts, [_nan(s.cpu_busy_pct) for s in signals], color="tab:blue", label="CPU busy %")
    ax.set_ylim(0, 105)  # a saturated host's 100% stays visible above the frame
    ax.set_ylabel("CPU busy (%)")
    ax.set_xlabel("seconds since the ladder started")
    disk = ax.twinx()
    reads = [_nan(None if s.disk_read_bps is None else s.disk_read_bps / 1e6) for s in signals]
    writes = [_nan(None if s.disk_write_bps is None else s.disk_write_bps / 1e6) for s in signals]
    disk.plot(ts, reads, color="tab:green", linewidth=0.8, label="disk read MB/s")
    disk.plot(ts, writes, color="tab:orange", linewidth=0.8, label="disk write MB/s")
    disk.set_ylim(bottom=0)
    disk.set_ylabel("disk (MB/s)")
    for index, rung in enumerate(rungs):
        start, end = rung.get("started_s"), rung.get("ended_s")
        if start is not None and end is not None:
            ax.axvspan(start, end, color="grey", alpha=0.08 if index % 2 else 0.16, lw=0)
            ax.annotate(
                str(rung["concurrency"]), ((start + end) / 2, 95), fontsize=7, ha="center", va="top"
            )
    handles, labels = ax.get_legend_handles_labels()
    extra, extra_labels = disk.get_legend_handles_labels()
    ax.legend(handles + extra, labels + extra_labels, loc="lower right", fontsize=7,
              framealpha=0.8)  # fmt: skip


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
