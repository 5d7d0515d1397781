"""`ladder sign` / `ladder verify`: a sha256 manifest of a run's files, optionally signed.

The manifest, `SHA256SUMS`, is in `sha256sum`'s format (`sha256sum -c SHA256SUMS` checks it
too) and lists report.json, requests.csv, signals.csv and, when present, report.md and
benchmarks.json. `--key` signs the manifest with `ssh-keygen -Y sign` (the mechanism git's
SSH signing uses) into `SHA256SUMS.sig`; `verify` recomputes every digest and, given an
allowed-signers file, checks the signature with `ssh-keygen -Y verify`. The manifest covers
the files and the signature covers the manifest, so one changed byte anywhere fails.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import LanegateError

MANIFEST = "SHA256SUMS"
SIGNATURE = MANIFEST + ".sig"
NAMESPACE = "lanegate-ladder"  # ssh-keygen -n: a signature made for this purpose only
REQUIRED = ("report.json", "requests.csv", "signals.csv")
OPTIONAL = ("report.md", "benchmarks.json")
_TIMEOUT_S = 30


class SigningError(LanegateError):
    """The run cannot be signed or verified; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    lines: tuple[str, ...]


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def render_manifest(digests: Mapping[str, str]) -> str:
    return "".join(f"{value}  {name}\n" for name, value in digests.items())


def parse_manifest(text: str) -> dict[str, str]:
    """`sha256sum` lines → {name: digest}; a malformed line raises (a manifest is ours)."""
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        value, sep, name = line.partition("  ")
        if not sep or len(value) != 64 or not name or "/" in name or name.startswith("."):
            raise SigningError(f"{MANIFEST} line {number} is not `<sha256>  <file>`: {line!r}")
        found[name] = value
    return found


def sign(run: Path, key: Path | None) -> list[str]:
    """Write the manifest (and its signature with `key`); returns what was written."""
    missing = [name for name in REQUIRED if not (run / name).is_file()]
    if missing:
        raise SigningError(f"{run} is not a ladder run: no {', '.join(missing)}")
    names = [*REQUIRED, *(n for n in OPTIONAL if (run / n).is_file())]
    (run / MANIFEST).write_text(render_manifest({n: digest(run / n) for n in names}))
    (run / SIGNATURE).unlink(missing_ok=True)
    written = [MANIFEST]
    if key is not None:
        _ssh_keygen(["-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(run / MANIFEST)])
        written.append(SIGNATURE)
    return written


def verify(run: Path, allowed_signers: Path | None, identity: str | None) -> Verdict:
    """Every digest, then the signature when one exists (it must be checked if it exists)."""
    manifest = run / MANIFEST
    if not manifest.is_file():
        raise SigningError(f"{run} has no {MANIFEST}: run `lanegate ladder sign {run}` first")
    expected = parse_manifest(manifest.read_text())
    lines, ok = [], True
    for name, value in expected.items():
        path = run / name
        actual = digest(path) if path.is_file() else None
        good = actual == value
        ok &= good
        lines.append(f"{name}: {'OK' if good else ('MISSING' if actual is None else 'CHANGED')}")
    signed = (run / SIGNATURE).is_file()
    if signed and allowed_signers is None:
        lines.append(f"{SIGNATURE}: NOT CHECKED (give --allowed-signers FILE --identity NAME)")
        ok = False
    elif signed and allowed_signers is not None:
        good, text = _check_signature(run, allowed_signers, identity)
        ok &= good
        lines.append(f"{SIGNATURE}: {'good signature' if good else 'BAD'}: {text}")
    elif allowed_signers is not None:
        lines.append(f"{SIGNATURE}: MISSING (a signature was asked for)")
        ok = False
    return Verdict(ok, tuple(lines))


def _check_signature(run: Path, allowed: Path, identity: str | None) -> tuple[bool, str]:
    if not identity:
        raise SigningError("--identity is required with --allowed-signers (the signer's name)")
    argv = ["-Y", "verify", "-f", str(allowed), "-I", identity, "-n", NAMESPACE]
    argv += ["-s", str(run / SIGNATURE)]
    result = _ssh_keygen(argv, stdin=(run / MANIFEST).read_bytes(), check=False)
    text = (result.stdout + result.stderr).decode(errors="replace").strip().splitlines()
    return result.returncode == 0, (text[-1] if text else f"exit {result.returncode}")


def _ssh_keygen(
    argv: list[str], *, stdin: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    try:
        result = subprocess.run(
            ["ssh-keygen", *argv], input=stdin or b"", capture_output=True, timeout=_TIMEOUT_S
        )
    except FileNotFoundError:
        raise SigningError(
            "ssh-keygen not found: install OpenSSH's client (Debian: openssh-client; it ships "
            "with macOS), or sign without --key for a manifest only"
        ) from None
    except subprocess.TimeoutExpired:
        raise SigningError("ssh-keygen did not finish (a key with a passphrase?)") from None
    if check and result.returncode != 0:
        raise SigningError(f"ssh-keygen failed: {result.stderr.decode(errors='replace').strip()}")
    return result
