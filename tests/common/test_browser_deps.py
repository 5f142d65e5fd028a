"""`make test` provides Debian's Chromium the way it provides PostgreSQL (issue 11).

bin/browser-deps runs before the tests: with Chromium missing it installs it with apt-get
when it may (root, apt-get on the PATH), and otherwise stops with one sentence saying what
to install. Here apt-get is a stand-in script on the PATH that records how it was called
and "installs" Chromium where the test told the script to look, so nothing on this machine
changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bin" / "browser-deps"
HINT = "The browser tests need Debian's Chromium: install it with 'sudo apt-get install -y chromium'"


def tools_only(tmp_path: Path) -> Path:
    """A PATH with just the tools the scripts use: this machine's own apt-get must never run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "id", "mkdir", "printf", "chmod"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return bin_dir


def run(tmp_path: Path, *, with_apt: bool) -> tuple[subprocess.CompletedProcess, Path, Path]:
    chromium = tmp_path / "usr-bin" / "chromium"
    calls = tmp_path / "apt-calls"
    bin_dir = tools_only(tmp_path)
    if with_apt:
        apt = bin_dir / "apt-get"
        apt.write_text(
            "#!/bin/sh\n"
            f'echo "$*" >> "{calls}"\n'
            f'case "$*" in *install*chromium*) mkdir -p "{chromium.parent}"; '
            f'printf "#!/bin/sh\\n" > "{chromium}"; chmod +x "{chromium}";; esac\n'
        )
        apt.chmod(0o755)
    env = {
        "PATH": str(bin_dir),
        "CONFIDANT_CHROMIUM_CANDIDATES": str(chromium),
        "HOME": str(tmp_path),
    }
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    return done, chromium, calls


def test_chromium_present_needs_nothing(tmp_path):
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    env = {"PATH": str(tools_only(tmp_path)), "CONFIDANT_CHROMIUM_CANDIDATES": str(chromium)}
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_missing_chromium_is_installed_with_apt_get_when_we_are_root(tmp_path):
    done, chromium, calls = run(tmp_path, with_apt=True)
    if os.geteuid() != 0:
        # Not root: no apt-get call, the one sentence instead.
        assert done.returncode == 1 and HINT in done.stderr and not calls.exists()
        return
    assert done.returncode == 0, done.stderr
    assert chromium.exists()
    assert calls.read_text().splitlines() == ["update -qq", "install -y -qq chromium"]


def test_without_a_package_manager_it_stops_with_one_sentence(tmp_path):
    done, chromium, calls = run(tmp_path, with_apt=False)
    assert done.returncode == 1
    assert done.stderr.strip().startswith(HINT) and done.stderr.count("\n") == 1
    assert not chromium.exists()
