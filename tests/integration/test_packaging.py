"""What a packager gets: a wheel built from the tracked files alone (no make, no stubs
generated on the spot, no grpcio-tools), installed into a fresh virtualenv, run from
outside the checkout: `cancelgw --help`, then a real sandbox and one real call."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 300


def _tracked_copy(into: Path) -> Path:
    """The checkout as a clean clone has it: tracked files only."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    return into


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=SECONDS, check=False,
    )  # fmt: skip


def test_a_wheel_installs_and_runs_anywhere(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "clone")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist",
                 source, cwd=tmp_path)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("cancellation_gateway-*.whl")
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    installed = _run(bin_dir / "pip", "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert _run(bin_dir / "pip", "show", "grpcio-tools", cwd=tmp_path).returncode != 0

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    helped = _run(bin_dir / "cancelgw", "--help", cwd=elsewhere)
    assert helped.returncode == 0, helped.stderr
    assert "sandbox" in helped.stdout

    sandbox = subprocess.Popen(
        [bin_dir / "cancelgw", "sandbox", "--listen", "127.0.0.1:0"],
        cwd=elsewhere, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sandbox.stdout is not None
        banner = ""
        while "CancelJob" not in banner:  # bounded by the child: it prints or exits
            line = sandbox.stdout.readline()
            assert line, f"sandbox exited: {banner}"
            banner += line
        target = re.search(r"gRPC on (\S+),", banner)
        report = re.search(r"cancel --target \S+ (kiiex-report \S+)\n", banner)
        assert target is not None
        assert report is not None
        called = _run(bin_dir / "cancelgw", "cancel", "--target", target.group(1),
                      *report.group(1).split(), cwd=elsewhere)  # fmt: skip
        assert called.returncode == 0, called.stderr
        assert called.stdout.startswith("ACCEPTED (UNSPECIFIED) kiiex CancelUserReport")
    finally:
        sandbox.send_signal(signal.SIGINT)
        assert sandbox.wait(timeout=30) == 0
