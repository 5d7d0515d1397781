"""`lanegate ladder`: step load at rising concurrency, the knee, and a gate report.

`lanegate ladder compare RUN_A RUN_B` puts two runs side by side (`--strict`: refuse runs
that differ in versions, model, prompts or machine); `history DIR...` shows p95 at each rung
across runs; `sign RUN` / `verify RUN` seal a run's files. docs/ladder.md walks through a run.
Exit status: 0 every gate passed (or verified), 1 a gate failed (or verification failed),
2 bad arguments or an unreadable run, 130 interrupted (everything measured is still written).
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
    compare.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) when the runs differ in lanegate/server/OS version, model "
        "digest, prompts, contract or machine (default: compare with a warning)",
    )
    history = actions.add_parser("history", help="p95 TTFT at each rung across runs, oldest first")
    history.add_argument("dirs", nargs="+", metavar="DIR", help="runs, or folders of runs")
    sign = actions.add_parser("sign", help="write SHA256SUMS for a run (and sign it with --key)")
    sign.add_argument("run", metavar="RUN")
    sign.add_argument("--key", help="SSH private key: signs SHA256SUMS with ssh-keygen -Y sign")
    verify = actions.add_parser("verify", help="check a run's SHA256SUMS (and its signature)")
    verify.add_argument("run", metavar="RUN")
    verify.add_argument("--allowed-signers", help="ssh-keygen allowed_signers file")
    verify.add_argument("--identity", help="the signer's principal in that file")
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
    g.add_argument("--note", help="recorded in the report, e.g. 'mini on a shelf, lid closed'")
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
    from gateway.tools.ladder.verbs import LadderUsageError

    try:
        return _dispatch(args)
    except LadderUsageError as exc:
        print(f"lanegate ladder: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from gateway.tools.ladder import verbs

    action = args.ladder_action
    if action == "compare":
        status, table, warning = verbs.compare_runs(
            Path(args.run_a), Path(args.run_b), strict=args.strict
        )
        if warning:
            print(f"lanegate ladder compare: {warning}", file=sys.stderr)
        print(table, end="")
        return status
    if action == "history":
        print(verbs.history([Path(d) for d in args.dirs]), end="")
        return 0
    if action == "sign":
        print(verbs.sign_run(Path(args.run), Path(args.key) if args.key else None), end="")
        return 0
    if action == "verify":
        allowed = Path(args.allowed_signers) if args.allowed_signers else None
        status, text = verbs.verify_run(Path(args.run), allowed, args.identity)
        print(text, end="")
        return status
    from gateway.tools.ladder.command import plot_run, run_ladder

    if action == "plot":
        return plot_run(Path(args.run))
    return run_ladder(args)
