"""Read a policy file: YAML → validated document → frozen `Policy`, or a precise error.

Every problem is reported as `file:line: field.path: message`, so an operator editing the
YAML by hand can go straight to the line. The YAML composer keeps each node's position;
pydantic's error locations are mapped back onto those positions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import ConfigError
from gateway.policy.document import Finding, Location, PolicyDocument, dotted
from gateway.policy.spec import Policy
from gateway.policy.suggest import did_you_mean, field_names, without
from gateway.policy.yaml_bounds import TooLarge, check_expanded_size, check_text_size

log = logging.getLogger("lanegate.policy")


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    file: str
    line: int | None
    field: str
    message: str
    warning: bool = False  # the policy is usable; the problem is probably a mistake

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        message = f"warning: {self.message}" if self.warning else self.message
        return f"{where}: {self.field or '(top level)'}: {message}"


class PolicyError(ConfigError):
    """A policy file that cannot be used; `problems` lists every error found."""

    def __init__(self, problems: list[PolicyProblem], *, complete: bool = True) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
        # False: a field in error could not be set aside (a required one), so the names used
        # across sections (lanes, clients, upstreams) are checked only once it is fixed.
        self.complete = complete


@dataclass(frozen=True, slots=True)
class CheckedPolicy:
    """A usable policy and the warnings found while checking it."""

    policy: Policy
    warnings: tuple[PolicyProblem, ...]


def load_policy(path: str | Path) -> Policy:
    """The policy in `path`; warnings are logged. Raises `PolicyError` listing every error."""
    checked = check_policy(path)
    for warning in checked.warnings:
        log.warning("policy: %s", warning)
    return checked.policy


def load_policy_text(text: str, source: str) -> Policy:
    return check_policy_text(text, source).policy


def check_policy(path: str | Path) -> CheckedPolicy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([PolicyProblem(str(path), None, "", f"cannot read: {exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError([PolicyProblem(str(path), None, "", "not UTF-8 text")]) from exc
    return check_policy_text(text, str(path))


def check_policy_text(text: str, source: str) -> CheckedPolicy:
    """Every problem of the file in one run: field errors first found by pydantic, then the
    cross-references (lanes, clients, upstreams named elsewhere) of what is left once the
    fields in error are set aside, so fixing the first batch never reveals a second."""
    data, lines = _parse_yaml(text, source)
    # Validation walks the data with aliases expanded: _parse_yaml bounded them first.
    problems, document, pruned = _validate_all(data, source, lines)
    if document is not None:
        problems += [
            _finding_problem(source, finding, lines)
            for finding in document.findings()
            if not any(finding.loc[: len(loc)] == loc for loc in pruned)
        ]
    if document is None or any(not problem.warning for problem in problems):
        ordered = sorted(problems, key=lambda p: (p.warning, p.line or 0))
        raise PolicyError(ordered, complete=document is not None)
    return CheckedPolicy(document.to_spec(source), tuple(problems))


# Each pass reports every field error pydantic finds; a field set aside may only uncover
# errors of validators that needed it, so two passes are usual and eight are plenty.
MAX_PASSES = 8


def _validate_all(
    data: dict[str, Any], source: str, lines: dict[Location, int]
) -> tuple[list[PolicyProblem], PolicyDocument | None, list[Location]]:
    """Validate; on errors, set the fields in error aside and validate the rest again, so
    the cross-section checks still run. Returns the problems, the document of what was left
    (None when a field in error cannot be set aside, e.g. a required one) and the fields
    set aside."""
    problems: list[PolicyProblem] = []
    pruned: list[Location] = []
    for _ in range(MAX_PASSES):
        try:
            return problems, PolicyDocument.model_validate(data), pruned
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        fresh = [error for error in errors if tuple(error["loc"]) not in pruned]
        problems += _problems(source, fresh, lines)
        if len(fresh) < len(errors):
            return problems, None, pruned  # setting a field aside made it missing: required
        for error in errors:
            loc: Location = tuple(error["loc"])
            smaller = without(data, loc)
            if smaller is None:
                return problems, None, pruned
            data, pruned = smaller, [*pruned, loc]
    return problems, None, pruned


def policy_schema() -> dict[str, Any]:
    """JSON Schema of the policy file, for editors (e.g. the YAML language server)."""
    schema = PolicyDocument.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[Location, int]]:
    try:
        check_text_size(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        check_expanded_size(root)  # before anything walks the aliases
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError([_yaml_problem(source, exc)]) from exc
    except TooLarge as exc:
        raise PolicyError([PolicyProblem(source, exc.line, "", str(exc))]) from exc
    except RecursionError as exc:  # PyYAML's composer recurses once per nesting level
        raise PolicyError([PolicyProblem(source, None, "", "the YAML nests too deeply")]) from exc
    if not isinstance(data, dict):
        raise PolicyError([PolicyProblem(source, 1, "", "expected a mapping with `upstreams:`")])
    lines, repeated = _line_index(root)
    if repeated:
        raise PolicyError([PolicyProblem(source, *entry) for entry in repeated])
    return data, lines


def _finding_problem(source: str, finding: Finding, lines: dict[Location, int]) -> PolicyProblem:
    written = any(finding.loc[:end] in lines for end in range(1, len(finding.loc) + 1))
    line = _nearest_line(finding.loc if written else finding.anchor, lines)
    return PolicyProblem(source, line, dotted(finding.loc), finding.message, finding.warning)


def _yaml_problem(source: str, exc: yaml.YAMLError) -> PolicyProblem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    if "alias" in str(getattr(exc, "context", "")):
        problem += ' (a value starting with * is an alias in YAML: quote globs, e.g. "*")'
    return PolicyProblem(source, line, "", f"YAML syntax: {problem}")


def _line_index(
    root: yaml.Node | None,
) -> tuple[dict[Location, int], list[tuple[int, str, str]]]:
    """Map each field path (as pydantic spells it) to the 1-based line where it is written.

    Also returns keys written twice in one mapping, which YAML would otherwise resolve
    silently by keeping the last one: (line, field, message) for each.
    """
    index: dict[Location, int] = {}
    repeated: list[tuple[int, str, str]] = []

    def walk(node: yaml.Node, path: Location) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                line = key.start_mark.line + 1
                if child in index:
                    message = f"written twice (also on line {index[child]}); keep one"
                    repeated.append((line, dotted(child), message))
                index[child] = line
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for position, item in enumerate(node.value):
                walk(item, (*path, position))

    if root is not None:
        walk(root, ())
    return index, repeated


def _problems(
    source: str, errors: list[ErrorDetails], lines: dict[Location, int]
) -> list[PolicyProblem]:
    problems = []
    for error in errors:
        loc: Location = tuple(error["loc"])
        problems.append(
            PolicyProblem(source, _nearest_line(loc, lines), dotted(loc), _message(error))
        )
    return problems


def _nearest_line(loc: Location, lines: dict[Location, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _message(error: object) -> str:
    assert isinstance(error, dict)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        loc = tuple(error["loc"])
        hint = did_you_mean(str(loc[-1]), field_names(PolicyDocument, loc)) if loc else ""
        return f"unknown field{hint or ' (check spelling; see `lanegate policy schema`)'}"
    if error["type"] == "missing":
        return "required field is missing"
    return message
