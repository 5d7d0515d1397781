"""The wheel, built once per test session and installed into a fresh venv outside the checkout
(tests/packaging/test_wheel.py, test_homebrew.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import REPO

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "gateway")


@dataclass
class Installed:
    wheel: Path
    venv: Path
    home: Path
    cwd: Path  # empty: nothing of the checkout is reachable from here

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "lanegate"), *argv],
            cwd=self.cwd,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, log: Path, *argv: str, **env: str) -> subprocess.Popen[str]:
        with log.open("w") as out:
            return subprocess.Popen(
                [str(self.venv / "bin" / "lanegate"), *argv],
                cwd=self.cwd,
                env=self.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )


def _pip(*argv: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def size_mb(path: Path) -> float:
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_symlink()) / 1e6


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory, output_dir: Path) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:  # a copy, so the build leaves no build/ or egg-info in the checkout
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    _pip("wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(source), cwd=root)
    [wheel] = (root / "dist").glob("lanegate-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    venv_python = str(root / "venv" / "bin" / "python")
    done = subprocess.run(
        [venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    size = size_mb(root / "venv")
    (output_dir / "packaging.json").write_text(
        json.dumps({"runtime_venv_mb": round(size, 1), "wheel": wheel.name}, indent=2) + "\n"
    )
    home, cwd = root / "home", root / "empty"
    home.mkdir()
    cwd.mkdir()
    yield Installed(wheel, root / "venv", home, cwd)
