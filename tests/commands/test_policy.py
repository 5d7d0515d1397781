"""`lanegate policy check` and `lanegate policy schema`: exit codes and output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gateway.commands import policy as policy_command
from tests.support.processes import REPO


def run(argv: list[str]) -> int:
    """Parse and run like `lanegate` does, with only this command registered."""
    parser = argparse.ArgumentParser(prog="lanegate")
    policy_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("default.yaml", "OK: 2 upstreams, 3 lanes, 3 clients, 4 rules"),
        ("demo.yaml", "OK: 2 upstreams, 3 lanes, 0 clients, 4 rules"),
    ],
)
def test_check_shipped_policy(name: str, summary: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "check", str(REPO / "policies" / name)]) == 0
    assert capsys.readouterr().out == summary + "\n"


def test_check_upstreams_only_policy_counts_the_implicit_lane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("upstreams:\n  - {name: a, base_url: 'http://127.0.0.1:11434'}\n")
    assert run(["policy", "check", str(path)]) == 0
    assert capsys.readouterr().out == "OK: 1 upstreams, 1 lanes, 0 clients, 0 rules\n"


BROKEN = """\
upstreams:
  - {name: mini, base_url: "http://127.0.0.1:11434", max_concurrency: 4}
lanes:
  - {name: interactive, priority: 100, max_concurrency: 4, reserved: 1}
  - {name: batch, priority: 10, max_concurrency: 3}
clients:
  - {name: alice, key: env:ALICE, lanes: [interactive, bulk]}
classify:
  default_lane: interactive
  rules:
    - {lane: turbo, match: {stream: true}}
"""


def test_check_prints_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text(BROKEN)
    assert run(["policy", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{path}:7: clients[0].lanes[1]: unknown lane 'bulk' (lanes: interactive, batch)",
        f"{path}:11: classify.rules[0].lane: unknown lane 'turbo' (lanes: interactive, batch)",
    ]
    assert captured.err == f"{path}: 2 errors\n"


def test_check_field_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text(BROKEN.replace("env:ALICE", "sk-abc123"))
    assert run(["policy", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{path}:7: clients[0].key: this looks like a plain key")
    assert "lanegate keys new" in out and "sk-abc123" not in out


def test_check_yaml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text("upstreams:\n  - name: a\n\tbase_url: x\n")
    assert run(["policy", "check", str(path)]) == 1
    assert capsys.readouterr().out.startswith(f"{path}:3: (top level): YAML syntax:")


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "check", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_check_prints_warnings_and_still_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text(
        "upstreams:\n  - {name: a, base_url: 'http://127.0.0.1:1', max_concurrency: 2}\n"
        "lanes:\n  - {name: only, priority: 1, max_concurrency: 5}\n"
    )
    assert run(["policy", "check", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{path}:4: lanes[0].max_concurrency: warning: 5 is more than")
    assert lines[1] == "OK: 1 upstreams, 1 lanes, 0 clients, 0 rules"


def test_schema_is_json_for_editors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "lanegate policy"
    assert {"upstreams", "lanes", "clients", "classify", "admin_key"} <= set(schema["properties"])
    assert schema["required"] == ["upstreams"]


def test_policy_without_action_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy"]) == 2
    assert "check" in capsys.readouterr().err


def test_check_needs_a_file() -> None:
    with pytest.raises(SystemExit) as caught:
        run(["policy", "check"])
    assert caught.value.code == 2
