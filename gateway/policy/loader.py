"""Read a policy file: YAML → validated document → frozen `Policy`, or a precise error.

Every problem is reported as `file:line: field.path: message`, so an operator editing the
YAML by hand can go straight to the line. The YAML composer keeps each node's position;
pydantic's error locations are mapped back onto those positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from gateway.policy.document import PolicyDocument
from gateway.policy.spec import Policy

Location = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '(top level)'}: {self.message}"


class PolicyError(Exception):
    """A policy file that cannot be used; `problems` lists every error found."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([PolicyProblem(str(path), None, "", f"cannot read: {exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError([PolicyProblem(str(path), None, "", "not UTF-8 text")]) from exc
    return load_policy_text(text, str(path))


def load_policy_text(text: str, source: str) -> Policy:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError([_yaml_problem(source, exc)]) from exc
    if not isinstance(data, dict):
        raise PolicyError([PolicyProblem(source, 1, "", "expected a mapping with `upstreams:`")])
    lines = _line_index(root)
    try:
        document = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_problems(source, exc, lines)) from exc
    return document.to_spec(source)


def _yaml_problem(source: str, exc: yaml.YAMLError) -> PolicyProblem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    return PolicyProblem(source, line, "", f"YAML syntax: {problem}")


def _line_index(root: yaml.Node | None) -> dict[Location, int]:
    """Map each field path (as pydantic spells it) to the 1-based line where it is written."""
    index: dict[Location, int] = {}

    def walk(node: yaml.Node, path: Location) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                index[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for position, item in enumerate(node.value):
                walk(item, (*path, position))

    if root is not None:
        walk(root, ())
    return index


def _problems(source: str, exc: ValidationError, lines: dict[Location, int]) -> list[PolicyProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc: Location = tuple(error["loc"])
        problems.append(
            PolicyProblem(source, _nearest_line(loc, lines), _dotted(loc), _message(error))
        )
    return problems


def _nearest_line(loc: Location, lines: dict[Location, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _dotted(loc: Location) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _message(error: object) -> str:
    assert isinstance(error, dict)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown field (check spelling; see `lanegate policy schema`)"
    if error["type"] == "missing":
        return "required field is missing"
    return message
