"""`ladder sign` / `ladder verify`: a real ssh-keygen key, a real run folder, one byte changed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.tools.ladder.signing import (
    MANIFEST,
    SIGNATURE,
    SigningError,
    parse_manifest,
    sign,
    verify,
)

needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None,
    reason="ssh-keygen missing: `make system-deps` installs openssh-client",
)


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "report.json").write_text('{"schema": 2}\n')
    (directory / "requests.csv").write_text("rung,lane,start_s\n1,,0.0\n2,,0.5\n")
    (directory / "signals.csv").write_text("t_s\n0.0\n")
    return directory


def keypair(tmp_path: Path, name: str = "ci@example") -> tuple[Path, Path]:
    key = tmp_path / f"key-{name}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    allowed = tmp_path / f"allowed-{name}"
    allowed.write_text(f"{name} {(tmp_path / f'key-{name}.pub').read_text()}")
    return key, allowed


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_manifest_only_run_verifies_until_one_byte_changes(run: Path) -> None:
    assert sign(run, key=None) == [MANIFEST]
    assert set(parse_manifest((run / MANIFEST).read_text())) == {
        "report.json", "requests.csv", "signals.csv",
    }  # fmt: skip
    assert verify(run, None, None).ok
    flip_one_byte(run / "requests.csv")
    verdict = verify(run, None, None)
    assert not verdict.ok and "requests.csv: CHANGED" in verdict.lines


def test_sha256sum_reads_the_manifest(run: Path) -> None:
    sign(run, key=None)
    result = subprocess.run(["sha256sum", "-c", MANIFEST], cwd=run, capture_output=True)
    assert result.returncode == 0, result.stdout


@needs_ssh_keygen
def test_a_signed_run_verifies_and_fails_after_one_byte(run: Path, tmp_path: Path) -> None:
    key, allowed = keypair(tmp_path)
    assert sign(run, key) == [MANIFEST, SIGNATURE]
    good = verify(run, allowed, "ci@example")
    assert good.ok, good.lines
    assert any("good signature" in line for line in good.lines)
    flip_one_byte(run / "requests.csv")
    bad = verify(run, allowed, "ci@example")
    assert not bad.ok and "requests.csv: CHANGED" in bad.lines


@needs_ssh_keygen
def test_a_rewritten_manifest_breaks_the_signature(run: Path, tmp_path: Path) -> None:
    key, allowed = keypair(tmp_path)
    sign(run, key)
    signature = (run / SIGNATURE).read_bytes()
    flip_one_byte(run / "requests.csv")
    sign(run, key=None)  # an attacker re-hashes the edited file ...
    (run / SIGNATURE).write_bytes(signature)  # ... and keeps the old signature
    verdict = verify(run, allowed, "ci@example")
    assert not verdict.ok
    assert all(line.endswith("OK") for line in verdict.lines[:3])  # digests match the lie
    assert any(line.startswith(f"{SIGNATURE}: BAD") for line in verdict.lines)


@needs_ssh_keygen
def test_another_signer_or_an_unchecked_signature_is_not_ok(run: Path, tmp_path: Path) -> None:
    key, _ = keypair(tmp_path, "alice@example")
    _, mallory = keypair(tmp_path, "mallory@example")
    sign(run, key)
    assert not verify(run, mallory, "mallory@example").ok
    unchecked = verify(run, None, None)
    assert not unchecked.ok and "NOT CHECKED" in unchecked.lines[-1]


def test_what_cannot_be_signed_or_verified_says_why(run: Path, tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="run `lanegate ladder sign"):
        verify(run, None, None)
    with pytest.raises(SigningError, match=r"not a ladder run: no requests\.csv"):
        (run / "requests.csv").unlink()
        sign(run, None)
    (run / MANIFEST).write_text("nonsense\n")
    with pytest.raises(SigningError, match="line 1"):
        verify(run, None, None)
    (run / MANIFEST).write_text("0" * 64 + "  ../../etc/passwd\n")
    with pytest.raises(SigningError, match="line 1"):
        verify(run, None, None)
