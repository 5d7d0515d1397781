"""`lanegate report`: summaries of the request ledger by lane, upstream, client, model; CSV.

Reads `STATE_DIR/ledger.sqlite` read-only, so it works while the gateway runs (the ledger is
in WAL mode: readers never block the writer). The arithmetic and the table are pure
(`gateway.observe.ledger_report`); this module only reads, prints and writes the CSV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.observe.ledger_report import LedgerRow


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="summarize the request ledger (by lane, upstream, client, model) and export CSV",
        description="Summaries of the requests that finished in the last --since: count, "
        "4xx/5xx, error rate, queue wait, TTFT and duration percentiles, tokens, and errors "
        "by status and code; per lane and per upstream unless --by says otherwise. Rows "
        "without a lane are explained at the end.",
    )
    parser.add_argument(
        "--by",
        action="append",
        metavar="COLUMNS",
        help="group by lane, upstream, client or model; combine with commas (--by lane,client) "
        "or repeat --by for one table each (default: a lane table and an upstream table)",
    )
    parser.add_argument(
        "--since", default="24h", help="how far back: 30m, 24h, 7d (default %(default)s)"
    )
    parser.add_argument("--csv", metavar="FILE", help="also write the raw rows to FILE as CSV")
    parser.add_argument(
        "--state-dir", metavar="DIR", help="the gateway's state dir (default: LANEGATE_STATE_DIR)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sqlite3
    import time

    from gateway.observe.ledger import LEDGER_FILE, read_rows
    from gateway.observe.ledger_report import parse_by, parse_duration

    try:
        window = parse_duration(args.since)
    except ValueError as exc:
        print(f"lanegate report: --since {exc}", file=sys.stderr)
        return 2
    try:
        groupings = [parse_by([value]) for value in args.by or ["lane", "upstream"]]
    except ValueError as exc:
        print(f"lanegate report: --by {exc}", file=sys.stderr)
        return 2
    path = _state_dir(args.state_dir) / LEDGER_FILE
    if not path.is_file():
        print(
            f"lanegate report: no ledger at {path}; the gateway writes it there once it has "
            "served a request (pass --state-dir, or set LANEGATE_STATE_DIR)",
            file=sys.stderr,
        )
        return 1
    now = time.time()
    try:
        rows = read_rows(path, now - window)
    except sqlite3.Error as exc:
        print(f"lanegate report: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    print(_report(rows, args.since, now - window, groupings))
    if args.csv:
        _write_csv(Path(args.csv), rows)
        print(f"\nwrote {len(rows)} rows to {args.csv}")
    return 0


def _state_dir(given: str | None) -> Path:
    if given:
        return Path(given).expanduser()
    from gateway.settings import Settings

    return Settings().state_dir


def _report(
    rows: list[LedgerRow], since: str, start: float, groupings: list[tuple[str, ...]]
) -> str:
    import time

    from gateway.observe.ledger_report import (
        render_summaries,
        render_unclassified,
        summarize,
        unclassified,
    )

    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(start))
    head = f"{len(rows)} requests in the last {since} (since {when})"
    if not rows:
        return head
    tables = [render_summaries(" / ".join(by), summarize(rows, by)) for by in groupings]
    laneless = render_unclassified(unclassified(rows))
    return "\n\n".join([head, *tables, *([laneless] if laneless else [])])


def _write_csv(path: Path, rows: list[LedgerRow]) -> None:
    import csv

    from gateway.observe.ledger_report import COLUMNS

    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
