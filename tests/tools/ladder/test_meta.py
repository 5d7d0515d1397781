"""What a ladder report says about the tool and the host: the git revision only of lanegate's
own checkout, never of a repository that merely contains the venv it is installed in."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gateway.tools.ladder.meta import PACKAGE_DIR, git_revision, host_info


def _repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (path / "README").write_text("x\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return path


def test_a_checkout_reports_its_revision(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "lanegate")
    (repo / "gateway").mkdir()
    revision = git_revision(repo / "gateway")
    assert revision is not None and len(revision) >= 12


def test_an_install_inside_another_repository_reports_none(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "someone-elses")
    site = repo / ".venv" / "lib" / "python3.11" / "site-packages" / "gateway"
    site.mkdir(parents=True)
    assert git_revision(site) is None


def test_this_checkout_has_a_revision_and_the_host_its_memory() -> None:
    assert git_revision(PACKAGE_DIR) is not None  # a worktree's .git is a file: still counts
    memory = host_info()["memory_bytes"]
    assert isinstance(memory, int) and memory > 0
