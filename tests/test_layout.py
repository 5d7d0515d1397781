"""The package's shape: no import circles, pure modules really pure, a small root.

The import graph is built from the source with `ast`, so imports under `TYPE_CHECKING` and
inside functions count: a circle hidden behind either still fails here.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import REPO

PACKAGE = REPO / "gateway"

# Pure modules decide; these would let one do I/O, wait, or read the clock.
FORBIDDEN_MODULES = frozenset(
    {
        "asyncio", "socket", "selectors", "select", "ssl", "threading", "multiprocessing",
        "subprocess", "sqlite3", "shutil", "tempfile", "signal", "urllib.request", "http.client",
        "httpx", "aiohttp", "redis", "uvicorn", "starlette", "psutil", "yaml", "logging",
    }
)  # fmt: skip
FORBIDDEN_CALLS = frozenset(
    {"time.time", "time.monotonic", "time.perf_counter", "time.sleep", "datetime.now", "open"}
)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The gateway modules `name` imports, wherever in the file the import stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {_owner(target, known) for target in found if target.startswith("gateway")} - {
        name,
        "gateway",
    }


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _owner(target: str, known: set[str]) -> str:
    while target not in known and "." in target:
        target = target.rpartition(".")[0]
    return target


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) & known for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path a → … → a, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_circle_the_way_the_package_would_have_one() -> None:
    graph = import_graph()
    graph["gateway.serving.routes"] = graph["gateway.serving.routes"] | {"gateway.app"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert "gateway.app" in cycle


def test_imports_under_type_checking_and_in_functions_count(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from gateway.app import Gateway\n"
        "def f():\n    from gateway.serving import relay\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = {"gateway.app", "gateway.serving.relay", "gateway.serving"}
    found = imports_of("gateway.probe", path, known)
    assert found == {"gateway.app", "gateway.serving", "gateway.serving.relay"}


def pure_modules() -> list[str]:
    """The one list of pure modules: pyproject's strict mypy override."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    strict = [o for o in config["tool"]["mypy"]["overrides"] if o.get("strict")]
    assert len(strict) == 1, "one strict override, and it is the list of pure modules"
    return list(strict[0]["module"])


def forbidden_uses(path: Path, pure: set[str]) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            root = name.split(".")[0]
            if name in FORBIDDEN_MODULES or root in FORBIDDEN_MODULES:
                yield f"imports {name}"
            elif root == "gateway" and _owner(name, set(modules())) not in pure | {"gateway"}:
                yield f"imports the shell module {name}"
            elif root not in sys.stdlib_module_names and root != "gateway":
                yield f"imports the library {name}"
        if isinstance(node, ast.Call) and (called := ast.unparse(node.func)) in FORBIDDEN_CALLS:
            yield f"calls {called}()"


@pytest.mark.parametrize("name", pure_modules())
def test_pure_modules_do_no_io_and_read_no_clock(name: str) -> None:
    path = modules()[name]
    assert list(forbidden_uses(path, set(pure_modules()))) == []


def test_the_purity_check_rejects_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "impure.py"
    path.write_text(
        "import asyncio\nimport time\nfrom gateway.serving import relay\nt = time.monotonic()\n"
    )
    found = list(forbidden_uses(path, set(pure_modules())))
    assert "imports asyncio" in found and "calls time.monotonic()" in found
    assert any("shell module gateway.serving" in f for f in found)


def test_the_package_root_holds_few_modules() -> None:
    root = [p.name for p in PACKAGE.glob("*.py")]
    assert len(root) <= 12, root


def mirrored_test_file(name: str) -> Path:
    """Where the tests of gateway module `name` live: tests/ mirrors gateway/."""
    *folders, leaf = name.split(".")[1:]
    return REPO.joinpath("tests", *folders, f"test_{leaf}.py")


@pytest.mark.parametrize("name", pure_modules())
def test_every_pure_module_has_a_test_file_of_its_name(name: str) -> None:
    path = mirrored_test_file(name)
    assert path.is_file(), f"{name} has no {path.relative_to(REPO)}"
