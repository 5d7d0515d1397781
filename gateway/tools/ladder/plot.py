"""`ladder.png`: p50/p95/p99 TTFT and throughput against concurrency, the knee marked.

matplotlib with the Agg backend (no display needed), imported only here and only when a
plot is drawn, so the rest of the ladder loads fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def draw(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rungs = [r for r in report["rungs"] if r["requests"]]
    xs = [r["concurrency"] for r in rungs]
    fig, ttft_ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for key, style in (("p50", "-o"), ("p95", "-s"), ("p99", "-^")):
        ys = [r["ttft_ms"][key] for r in rungs]
        ttft_ax.plot(xs, [float("nan") if y is None else y for y in ys], style, label=f"TTFT {key}")
    ttft_ax.set_xscale("log", base=2)
    ttft_ax.set_xticks(xs, [str(x) for x in xs])
    ttft_ax.set_xlabel("concurrency (requests in flight)")
    ttft_ax.set_ylabel("TTFT (ms)")
    rps_ax = ttft_ax.twinx()
    rps_ax.plot(xs, [r["throughput_rps"] for r in rungs], "--", color="grey", label="req/s")
    rps_ax.set_ylabel("throughput (completed req/s)")
    rps_ax.set_ylim(bottom=0)
    knee = report.get("knee")
    if knee is not None:
        ttft_ax.axvline(knee["concurrency"], color="red", linestyle=":", linewidth=1.5)
        ttft_ax.annotate(
            f"knee: {knee['rule']}",
            xy=(knee["concurrency"], 0.55),
            xycoords=("data", "axes fraction"),
            color="red",
            ha="right",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    handles = ttft_ax.get_legend_handles_labels()
    extra = rps_ax.get_legend_handles_labels()
    ttft_ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper left", fontsize=8)
    ttft_ax.set_title(f"{report['target']['model']}: load ladder", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
