"""The ladder's verbs over finished runs: `compare`, `history`, `sign`, `verify`.

Shell: reads run directories, calls the pure `compare` / `provenance` and the `signing`
helpers, returns text and an exit status. `gateway.commands.ladder` wires them to argparse.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.errors import LanegateError
from gateway.tools.ladder.compare import compare_reports
from gateway.tools.ladder.provenance import history_table, mismatches
from gateway.tools.ladder.signing import SigningError, sign, verify

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class LadderUsageError(LanegateError):
    """Arguments or files the ladder cannot run with; the message says what to change."""


def load_report(path: Path) -> dict[str, Any]:
    file = path / "report.json" if path.is_dir() else path
    try:
        report: dict[str, Any] = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise LadderUsageError(f"cannot read a ladder report from {file}: {exc}") from None
    if not isinstance(report, dict):
        raise LadderUsageError(f"cannot read a ladder report from {file}: not a JSON object")
    return report


def compare_runs(run_a: Path, run_b: Path, *, strict: bool = False) -> tuple[int, str, str]:
    """(exit status, table, warnings). Runs that differ in tool, server, OS, model, prompts or
    machine are compared with a warning, or refused with `strict`."""
    a, b = load_report(run_a), load_report(run_b)
    found = mismatches(a, b)
    if found and strict:
        why = "; ".join(found)
        text = f"refusing to compare runs that differ in: {why} (drop --strict to compare anyway)"
        return EXIT_USAGE, "", text
    warning = ""
    if found:
        warning = "warning: these runs differ, so a ratio may not be the host's doing: "
        warning += "; ".join(found)
    return EXIT_OK, compare_reports(a, b), warning


def run_directories(paths: Sequence[Path]) -> list[Path]:
    """Each path is a run (has report.json) or a folder of runs (ladder-runs/)."""
    found = []
    for path in paths:
        if (path / "report.json").is_file() or path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if (p / "report.json").is_file())
        else:
            raise LadderUsageError(f"{path}: no such run or folder of runs")
    if not found:
        raise LadderUsageError("no ladder runs found in " + ", ".join(map(str, paths)))
    return found


def history(paths: Sequence[Path]) -> str:
    return history_table([load_report(run) for run in run_directories(paths)])


def sign_run(run: Path, key: Path | None) -> str:
    try:
        written = sign(run, key)
    except SigningError as exc:
        raise LadderUsageError(str(exc)) from None
    return f"wrote {', '.join(str(run / name) for name in written)}\n"


def verify_run(run: Path, allowed: Path | None, identity: str | None) -> tuple[int, str]:
    try:
        verdict = verify(run, allowed, identity)
    except SigningError as exc:
        raise LadderUsageError(str(exc)) from None
    status = "verified" if verdict.ok else "NOT VERIFIED"
    return (EXIT_OK if verdict.ok else EXIT_FAILED), "\n".join([*verdict.lines, status]) + "\n"
