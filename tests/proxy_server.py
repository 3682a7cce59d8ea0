"""A real forward proxy, `tinyproxy`, on a free loopback port, started and stopped by the
tests, with BasicAuth; its log shows every CONNECT it was asked for."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.redis_server import free_port

STARTUP_SECONDS = 10


class ProxyServer:
    def __init__(
        self, folder: Path, *, user: str = "egress", password: str = "egress-pass"
    ) -> None:
        binary = shutil.which("tinyproxy")
        if binary is None:  # make test installs it; never skip silently
            raise RuntimeError("tinyproxy is not on PATH: run `make tools` (Debian tinyproxy)")
        self._binary, self._folder = binary, folder
        self.user, self.password = user, password
        self.port = free_port()
        self.log = folder / "tinyproxy.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = self._folder / "tinyproxy.conf"
        config.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\n"
            f"Allow 127.0.0.1\nBasicAuth {self.user} {self.password}\n"
            f'LogFile "{self.log}"\nLogLevel Info\nDisableViaHeader Yes\n'
            f'PidFile "{self._folder / "tinyproxy.pid"}"\n'
        )  # no ConnectPort line: CONNECT to any port (the upstreams' are free loopback ports)
        self._process = subprocess.Popen(
            [self._binary, "-d", "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _listening(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tinyproxy did not start on port {self.port}")
            time.sleep(0.02)

    def connects(self) -> list[str]:
        """The CONNECT requests it logged, as `host:port`."""
        text = self.log.read_text() if self.log.exists() else ""
        return [line.rsplit("CONNECT ", 1)[1].split()[0] for line in text.splitlines()
                if "CONNECT " in line and "Request (file descriptor" in line]  # fmt: skip

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=STARTUP_SECONDS)
        self._process = None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
