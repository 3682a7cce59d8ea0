"""`cancelgw serve` as a real process: config file, environment, the port it bound."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

CANCELGW = str(Path(sys.executable).parent / "cancelgw")
STARTUP_SECONDS = 20.0


@dataclass
class Served:
    process: asyncio.subprocess.Process
    target: str
    log: Path
    """The process's stderr: its JSON log lines."""

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


def _files(folder: Path, config: str) -> tuple[Path, Path]:
    """A config file written for the next gateway, and the file its stderr goes to."""
    name = f"gateway-{len(list(folder.glob('gateway-*.toml')))}"
    path, log = folder / f"{name}.toml", folder / f"{name}.log"
    path.write_text(config)
    return path, log


async def serve(folder: Path, config: str, env: dict[str, str]) -> Served:
    """Starts `cancelgw serve` on `config` (TOML text) and waits until it serves."""
    path, log = _files(folder, config)
    with log.open("wb") as stderr:  # a file, not a pipe: a full pipe would block the gateway
        process = await asyncio.create_subprocess_exec(
            CANCELGW, "serve", "--config", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=stderr, env={**os.environ, **env},
        )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(STARTUP_SECONDS):
        line = await process.stdout.readline()
    found = re.search(rb"serving on port (\d+)", line)
    if found is None:
        await process.wait()
        raise AssertionError(f"cancelgw serve did not start: {line!r} {log.read_text()[-2000:]}")
    return Served(process, f"127.0.0.1:{found.group(1).decode()}", log)
