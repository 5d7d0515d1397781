"""The Homebrew formula for lanegate, generated from the lock of its runtime dependencies.

    python deploy/homebrew/formula.py lock      # after a runtime dependency changes (network)
    python deploy/homebrew/formula.py render --sdist dist/lanegate-X.Y.Z.tar.gz --url URL

`lock` resolves pyproject's [project] dependencies (the runtime core, no extras) with
`pip lock` against PyPI and records each package's source distribution (URL and sha256, from
PyPI's JSON API: Homebrew builds resources from source) in pylock.runtime.toml (PEP 751).
`render` writes lanegate.rb from that lock: one `resource` per locked package, the release
sdist's URL and sha256 (--sdist hashes a local file; without --url its file:// URL is used,
which a local tap can install). tests/packaging/test_homebrew.py checks that lanegate.rb is
what `render` makes from the lock and that the lock satisfies the wheel's dependencies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOCK = HERE / "pylock.runtime.toml"
FORMULA = HERE / "lanegate.rb"
PYPI = "https://pypi.org"
# Until a release is published: `render --url` replaces both (see docs/quickstart-mac.md).
UNRELEASED_URL = "https://example.invalid/lanegate/lanegate-{version}.tar.gz"
UNRELEASED_SHA256 = "0" * 64
UNRELEASED_HOMEPAGE = "https://example.invalid/lanegate"
DESC = "Lane-aware gateway in front of local LLM servers on a Mac"


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return data


def lock() -> None:
    """Resolve the runtime core with pip, then record each package's sdist from PyPI. A
    version published without an sdist (Homebrew builds from source) is excluded and the
    resolution repeated."""
    excluded: list[str] = []
    for _ in range(10):
        resolved = _resolve(excluded)
        sdists = {(p["name"], p["version"]): _sdist(p["name"], p["version"]) for p in resolved}
        missing = [f"{name}!={version}" for (name, version), sdist in sdists.items() if not sdist]
        if not missing:
            break
        excluded += missing
    else:
        raise SystemExit(f"no sdist for: {', '.join(missing)}")
    lines = [
        "# The runtime dependencies of lanegate, resolved and pinned (PEP 751), with the",
        "# source distribution Homebrew builds each from. Made by",
        "# `python deploy/homebrew/formula.py lock`.",
        'lock-version = "1.0"',
        'created-by = "deploy/homebrew/formula.py"',
        f'requires-python = "{project()["requires-python"]}"',
    ]
    for (name, version), sdist in sorted(sdists.items()):
        assert sdist is not None  # the loop above left none missing
        lines += [
            "",
            "[[packages]]",
            f'name = "{name}"',
            f'version = "{version}"',
            "[packages.sdist]",
            f'name = "{sdist["filename"]}"',
            f'url = "{sdist["url"]}"',
            f'hashes = {{sha256 = "{sdist["sha256"]}"}}',
        ]
    LOCK.write_text("\n".join(lines) + "\n")


def _resolve(excluded: list[str]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as temp:
        requirements = Path(temp) / "requirements.txt"
        requirements.write_text("\n".join([*project()["dependencies"], *excluded]) + "\n")
        output = Path(temp) / "pylock.toml"
        # PyPI alone: no pip.conf (local wheel folders or mirrors would leak into the lock);
        # only a certificate bundle the machine names is kept.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        cert = ["--cert", os.environ["PIP_CERT"]] if os.environ.get("PIP_CERT") else []
        subprocess.run(
            [sys.executable, "-m", "pip", "lock", "-q", "--index-url", f"{PYPI}/simple", *cert,
             "-r", str(requirements), "-o", str(output)],
            check=True,
            env=env,
        )  # fmt: skip
        packages: list[dict[str, Any]] = tomllib.loads(output.read_text())["packages"]
        return packages


def _sdist(name: str, version: str) -> dict[str, Any] | None:
    """The package's source distribution for `version`, from PyPI's JSON simple API (PEP 691,
    what pip reads)."""
    request = urllib.request.Request(
        f"{PYPI}/simple/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        files = json.loads(response.read())["files"]
    stem = f"{name}-{version}".replace("-", "_").lower()
    for file in files:
        filename = file["filename"]
        if filename.endswith(".tar.gz") and filename[:-7].replace("-", "_").lower() == stem:
            return {"filename": filename, "url": file["url"], "sha256": file["hashes"]["sha256"]}
    return None


def render(
    locked: dict[str, Any], url: str, sha256: str, homepage: str = UNRELEASED_HOMEPAGE
) -> str:
    """lanegate.rb for this lock and release tarball."""
    meta = project()
    resources: list[str] = []
    for package in locked["packages"]:
        sdist = package["sdist"]
        resources += [
            f'  resource "{package["name"]}" do',
            f'    url "{sdist["url"]}"',
            f'    sha256 "{sdist["hashes"]["sha256"]}"',
            "  end",
            "",
        ]
    return _TEMPLATE.format(
        desc=DESC,
        homepage=homepage,
        url=url,
        sha256=sha256,
        license=meta["license"],
        resources="\n".join(resources).rstrip("\n"),
    )


_TEMPLATE = """\
# Homebrew formula for lanegate. Generated by deploy/homebrew/formula.py from
# pylock.runtime.toml: edit those, not this file. Put it in a tap (`brew tap-new`), then
# `brew install lanegate`; `brew services start lanegate` runs the gateway as a LaunchAgent.
class Lanegate < Formula
  include Language::Python::Virtualenv

  desc "{desc}"
  homepage "{homepage}"
  url "{url}"
  sha256 "{sha256}"
  license "{license}"

  depends_on "rust" => :build # pydantic-core builds from source
  depends_on "libyaml"
  depends_on "python@3.13"

{resources}

  def install
    virtualenv_install_with_resources
  end

  service do
    # `lanegate serve` reads ~/.lanegate/policy.yaml (write it with `lanegate init`).
    run [opt_bin/"lanegate", "serve"]
    keep_alive true
    process_type :interactive
    working_dir var
    log_path var/"log/lanegate.log"
    error_log_path var/"log/lanegate.log"
  end

  test do
    assert_match version.to_s, shell_output("#{{bin}}/lanegate --version")
    system bin/"lanegate", "policy", "check", "--examples"
    system bin/"lanegate", "service", "render", "gateway-agent", "--user", ENV["USER"]
  end
end
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("lock", help="resolve the runtime dependencies into pylock.runtime.toml")
    draw = actions.add_parser("render", help="write lanegate.rb from the lock")
    draw.add_argument("--sdist", type=Path, help="the release's sdist, hashed for sha256")
    draw.add_argument("--url", help="where the release sdist is published")
    draw.add_argument("--homepage", default=UNRELEASED_HOMEPAGE, help="the project's home page")
    draw.add_argument("--out", type=Path, default=FORMULA)
    args = parser.parse_args(argv)
    if args.action == "lock":
        lock()
        return 0
    version = project()["version"]
    url = args.url or (args.sdist.resolve().as_uri() if args.sdist else None)
    url = url or UNRELEASED_URL.format(version=version)
    sha256 = hashlib.sha256(args.sdist.read_bytes()).hexdigest() if args.sdist else None
    locked = tomllib.loads(LOCK.read_text())
    text = render(locked, url, sha256 or UNRELEASED_SHA256, args.homepage)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
