"""deploy/homebrew/lanegate.rb: generated from the lock of the runtime dependencies, whose
packages are exactly what the wheel needs on a Mac; Ruby parses it where Ruby is installed."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import tomllib
from types import ModuleType
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.conftest import Installed
from tests.support.paths import REPO

HOMEBREW = REPO / "deploy" / "homebrew"
FORMULA = (HOMEBREW / "lanegate.rb").read_text()
LOCK = tomllib.loads((HOMEBREW / "pylock.runtime.toml").read_text())
# A Mac with Homebrew's Python, for evaluating markers such as uvloop's.
MAC = {
    **default_environment(),
    "sys_platform": "darwin",
    "platform_system": "Darwin",
    "os_name": "posix",
    "python_version": "3.13",
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("formula", HOMEBREW / "formula.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_formula_is_what_the_lock_renders() -> None:
    """Edit the lock (`formula.py lock`) and re-render, never the .rb by hand."""
    url = re.search(r'^  url "([^"]+)"', FORMULA, re.M)
    sha = re.search(r'^  sha256 "([0-9a-f]{64})"', FORMULA, re.M)
    home = re.search(r'^  homepage "([^"]+)"', FORMULA, re.M)
    assert url and sha and home
    rendered = _generator().render(LOCK, url.group(1), sha.group(1), home.group(1))
    assert rendered == FORMULA, "run: python deploy/homebrew/formula.py render"


def test_one_resource_per_locked_package_from_its_sdist() -> None:
    resources = re.findall(r'resource "([^"]+)" do\n    url "([^"]+)"\n    sha256 "(\w+)"', FORMULA)
    locked = [
        (p["name"], p["sdist"]["url"], p["sdist"]["hashes"]["sha256"]) for p in LOCK["packages"]
    ]
    assert resources == locked
    assert all(url.endswith(".tar.gz") for _, url, _ in resources)


def _installed_requirements(installed: Installed) -> dict[str, list[str]]:
    script = (
        "import json, importlib.metadata as m\n"
        "print(json.dumps({d.metadata['Name']: d.requires or [] for d in m.distributions()}))"
    )
    done = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", script],
        env=installed.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, list[str]] = json.loads(done.stdout)
    return {canonicalize_name(name): requires for name, requires in found.items()}


def _closure(requires: dict[str, list[str]], root: str) -> dict[str, list[Requirement]]:
    """Every package `root` needs on a Mac (no extras), with the requirements naming it."""
    needed: dict[str, list[Requirement]] = {}
    stack = [root]
    while stack:
        for line in requires.get(stack.pop(), []):
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({**MAC, "extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            if name not in needed:
                stack.append(name)
            needed.setdefault(name, []).append(requirement)
    return needed


def test_the_lock_is_what_the_wheel_needs_on_a_mac(installed: Installed) -> None:
    needed = _closure(_installed_requirements(installed), "lanegate")
    locked: dict[str, Any] = {canonicalize_name(p["name"]): p["version"] for p in LOCK["packages"]}
    assert sorted(locked) == sorted(needed)
    for name, requirements in needed.items():
        for requirement in requirements:
            assert requirement.specifier.contains(locked[name], prereleases=True), (
                f"{requirement} is not met by the lock's {name} {locked[name]}"
            )


@pytest.mark.skipif(shutil.which("ruby") is None, reason="no ruby (make system-deps installs it)")
def test_ruby_parses_the_formula() -> None:
    done = subprocess.run(
        ["ruby", "-c", str(HOMEBREW / "lanegate.rb")], capture_output=True, text=True
    )
    assert done.returncode == 0 and "Syntax OK" in done.stdout, done.stderr
