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


def test_the_shipped_examples_check_in_place(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "check", "--examples"]) == 0
    out = capsys.readouterr().out
    assert out.count("OK: 2 upstreams") == 2 and "examples/demo.yaml:" in out


def test_an_example_prints_as_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "example", "default"]) == 0
    assert capsys.readouterr().out == (REPO / "policies" / "default.yaml").read_text()


def test_check_wants_a_file_or_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "check"]) == 2
    assert "--examples" in capsys.readouterr().err


ALL_AT_ONCE = """\
version: 1
upstreams:
  - {name: mini, kind: ollama, base_url: "http://127.0.0.1:11434", max_concurency: 4}
lanes:
  - {name: interactive, priority: 100, max_concurrency: 2, max_queu: 20}
  - {name: batch, priority: 10, queue_timeout: -5}
clients:
  - {name: alice, key: "env:ALICE", lanes: [interactiv, batch]}
classify:
  default_lane: interactive
  rules:
    - {name: jobs, lane: batchh, match: {client: [alise]}}
"""


def test_check_reports_every_problem_in_one_pass_with_near_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three field errors and the cross-references, one run: nothing left for a second."""
    path = tmp_path / "ops.yaml"
    path.write_text(ALL_AT_ONCE)
    assert run(["policy", "check", str(path)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines == [
        f"{path}:3: upstreams[0].max_concurency: unknown field; did you mean 'max_concurrency'?",
        f"{path}:5: lanes[0].max_queu: unknown field; did you mean 'max_queue'?",
        f"{path}:6: lanes[1].queue_timeout: {lines[2].split('queue_timeout: ', 1)[1]}",
        f"{path}:8: clients[0].lanes[0]: unknown lane 'interactiv' (lanes: interactive, batch)"
        "; did you mean 'interactive'?",
        f"{path}:8: clients[0].lanes: requests no rule matches go to classify.default_lane "
        "'interactive', which this client may not use: add it to `lanes` or set the client's "
        "default_lane",
        f"{path}:12: classify.rules[0].lane: unknown lane 'batchh' (lanes: interactive, batch)"
        "; did you mean 'batch'?",
        f"{path}:12: classify.rules[0].match.client[0]: unknown client 'alise' (clients: alice)"
        "; did you mean 'alice'?",
    ]
    assert "greater than" in lines[2]
    assert captured.err == f"{path}: 7 errors\n"
    # Fixing what was reported leaves nothing: there was no second batch.
    fixed = (
        ALL_AT_ONCE.replace("max_concurency", "max_concurrency")
        .replace("max_queu:", "max_queue:")
        .replace("queue_timeout: -5", "queue_timeout: 5")
        .replace("interactiv,", "interactive,")
        .replace("batchh", "batch")
        .replace("alise", "alice")
    )
    path.write_text(fixed)
    assert run(["policy", "check", str(path)]) == 0


def test_a_required_field_in_error_says_cross_references_come_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text(ALL_AT_ONCE.replace('base_url: "http://127.0.0.1:11434"', "base_url: 7"))
    assert run(["policy", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{path}:3: upstreams[0].base_url: ")
    assert captured.err.splitlines()[-1] == (
        "names used across sections (lanes, clients, upstreams) are checked once the errors "
        "above are fixed"
    )
