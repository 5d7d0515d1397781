"""`lanegate ladder`: step load at rising concurrency, the knee, and a gate report.

`lanegate ladder compare RUN_A RUN_B` puts two runs side by side. docs/ladder.md walks
through a run. Exit status: 0 every gate passed, 1 a gate failed, 2 bad arguments or an
unreadable run, 130 interrupted (everything measured is still written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_RUNGS = "1,2,4,8,16"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ladder",
        help="load a server at rising concurrency; report p50/p95/p99, the knee and SLO gates",
        description="Keep exactly C requests in flight for each rung (closed loop) with a "
        "fixed seeded prompt set, find the knee, and write requests.csv, signals.csv, "
        "report.json, report.md and ladder.png.",
    )
    actions = parser.add_subparsers(dest="ladder_action", metavar="ACTION")
    compare = actions.add_parser("compare", help="two runs side by side, rung by rung")
    compare.add_argument("run_a", metavar="RUN_A", help="a run directory or its report.json")
    compare.add_argument("run_b", metavar="RUN_B")
    plot = actions.add_parser("plot", help="draw ladder.png of a run (needs lanegate[ladder])")
    plot.add_argument("run", metavar="RUN", help="a run directory or its report.json")
    _target_flags(parser)
    _load_flags(parser)
    _gate_flags(parser)
    parser.set_defaults(func=run)


def _target_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("target")
    g.add_argument("--base-url", help="OpenAI base URL ending in /v1 (required)")
    g.add_argument("--model", help="model name as the server knows it (required)")
    g.add_argument("--api-key", help="sent as a bearer key (default: $OPENAI_API_KEY if set)")
    g.add_argument("--lane", help="send X-Lane: LANE with every request")
    g.add_argument(
        "--mix",
        help="lanes side by side through a gateway, e.g. interactive=2,batch=8,heartbeat=1/s "
        "(one step of --rung-seconds; each lane reported separately)",
    )
    g.add_argument(
        "--lane-key",
        action="append",
        default=[],
        metavar="LANE=KEY",
        help="per-lane API key for --mix (repeatable); lanes without one use --api-key",
    )


def _load_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("load")
    g.add_argument("--rungs", default=DEFAULT_RUNGS, help="concurrencies (default %(default)s)")
    g.add_argument("--rung-seconds", type=float, default=60.0, help="default %(default)s")
    g.add_argument("--prompt-tokens", type=int, default=128, help="default %(default)s")
    g.add_argument("--max-tokens", type=int, default=128, help="default %(default)s")
    g.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--seed", type=int, default=1, help="prompt set seed (default %(default)s)")
    g.add_argument("--timeout", type=float, default=600.0, help="per request, s")
    g.add_argument("--stop-at-knee", action="store_true", help="end the ladder at the knee")
    g.add_argument("--watch-pid", type=int, help="sample this process's RSS")
    g.add_argument("--watch-name", help="sample the summed RSS of processes named this")
    g.add_argument("--sample-interval", type=float, default=1.0, help="signals, s")
    g.add_argument("--out", help="output directory (default ladder-runs/<timestamp>/)")
    g.add_argument("--no-plot", action="store_true", help="skip ladder.png")


def _gate_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("knee and gates (flags override --policy's slo section)")
    g.add_argument("--policy", help="policy file whose `slo` section holds the gates")
    g.add_argument("--knee-ratio", type=float, default=3.0, help="p95 TTFT x rung 1")
    g.add_argument("--knee-error-rate", type=float, default=0.01)
    g.add_argument(
        "--knee-min-gain",
        type=float,
        default=0.10,
        help="least throughput gain on the previous rung (default %(default)s; negative: "
        "tolerate that drop)",
    )
    g.add_argument("--gate-p95-ttft-ms", type=float, help="interactive p95 TTFT limit, ms")
    g.add_argument("--gate-p95-ratio", type=float, help="p95 TTFT limit x rung 1 (default 3)")
    g.add_argument("--gate-error-rate", type=float, help="default 0.01")
    g.add_argument("--gate-swap-growth-gb", type=float, help="default 2")


def run(args: argparse.Namespace) -> int:
    from gateway.tools.ladder.command import LadderUsageError, compare_runs, plot_run, run_ladder

    try:
        if args.ladder_action == "compare":
            print(compare_runs(Path(args.run_a), Path(args.run_b)), end="")
            return 0
        if args.ladder_action == "plot":
            return plot_run(Path(args.run))
        return run_ladder(args)
    except LadderUsageError as exc:
        print(f"lanegate ladder: {exc}", file=sys.stderr)
        return 2
