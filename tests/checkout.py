"""The checkout as a clean clone has it, copied elsewhere: what a packager builds from, or a
scratch repository a test may change."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_files() -> list[str]:
    """Tracked files, and those not committed yet that `git add` would take."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return [name for name in filter(None, listed.split("\0")) if (ROOT / name).is_file()]


def tracked_copy(into: Path, admit: Callable[[str], bool] = lambda name: True) -> Path:
    """Copies the tracked files that `admit` lets through into `into`."""
    for name in tracked_files():
        if admit(name):
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    return into
