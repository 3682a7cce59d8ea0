"""What a packager gets: a wheel built from the tracked files alone (no make, no stubs
generated on the spot, no grpcio-tools), installed into a fresh virtualenv, run from
outside the checkout. `pip install` of it serves the sandbox and a real call once the
[sandbox] extra is in, and says how to get that extra before. The image's install
(deploy/Dockerfile: requirements.lock with hashes, then a wheel of what the build stage
copies) serves a real call to an upstream and has no sandbox."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from tests.checkout import tracked_copy
from tests.deploy.tools import copied, dockerfile_stages, in_build_context
from tests.processes import KIIEX_ENV, kiiex_gateway_config

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 300
EXTRA_HINT = "pip install 'cancellation-gateway[sandbox]'"


def _tracked_copy(into: Path, only: set[str] | None = None) -> Path:
    """A clean clone's files (with `only`: those under its paths that the image's build
    context admits)."""
    if only is None:
        return tracked_copy(into)
    return tracked_copy(
        into, lambda name: name.partition("/")[0] in only and in_build_context(name)
    )


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=SECONDS, check=False,
    )  # fmt: skip


def _wheel(source: Path, into: Path) -> Path:
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", into, source,
                 cwd=into.parent)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = into.glob("cancellation_gateway-*.whl")
    return wheel


def _venv(folder: Path) -> Path:
    venv.create(folder, with_pip=True)
    return folder / "bin"


def _no_sandbox(bin_dir: Path, cwd: Path, hint: str, *missing: str) -> None:
    """`cancelgw sandbox` fails at once with one line saying what it needs (`hint`) and
    naming the first of the `missing` modules it tried to import."""
    refused = _run(bin_dir / "cancelgw", "sandbox", "--listen", "127.0.0.1:0", cwd=cwd)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert hint in refused.stderr
    assert any(f"no module '{module}'" in refused.stderr for module in missing), refused.stderr


def test_a_wheel_installs_and_runs_anywhere(tmp_path: Path) -> None:
    wheel = _wheel(_tracked_copy(tmp_path / "clone"), tmp_path / "dist")
    bin_dir = _venv(tmp_path / "venv")
    installed = _run(bin_dir / "pip", "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert _run(bin_dir / "pip", "show", "grpcio-tools", cwd=tmp_path).returncode != 0

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    helped = _run(bin_dir / "cancelgw", "--help", cwd=elsewhere)
    assert helped.returncode == 0, helped.stderr
    assert "sandbox" in helped.stdout
    _no_sandbox(bin_dir, elsewhere, EXTRA_HINT, "starlette", "uvicorn")

    extra = _run(bin_dir / "pip", "install", "-q", f"{wheel}[sandbox]", cwd=tmp_path)
    assert extra.returncode == 0, extra.stderr
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
        assert called.stdout.startswith("ACCEPTED kiiex CancelUserReport")
    finally:
        sandbox.send_signal(signal.SIGINT)
        assert sandbox.wait(timeout=30) == 0


async def test_the_images_install_serves_without_the_simulators(tmp_path: Path) -> None:
    build, _ = dockerfile_stages()
    wheel = _wheel(_tracked_copy(tmp_path / "context", only=copied(build)), tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"gateway", "adapters", "cancellation"} <= {name.partition("/")[0] for name in names}
    assert not [name for name in names if "simulat" in name]
    bin_dir = _venv(tmp_path / "venv")
    # deploy/Dockerfile's two installs (tests/deploy/test_image.py checks it makes them).
    for argv in (("--require-hashes", "--no-deps", "-r", ROOT / "requirements.lock"),
                 ("--no-deps", wheel)):  # fmt: skip
        installed = _run(bin_dir / "pip", "install", "-q", *argv, cwd=tmp_path)
        assert installed.returncode == 0, installed.stderr
    checked = _run(bin_dir / "pip", "check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    for absent in ("starlette", "uvicorn", "pytest"):
        assert _run(bin_dir / "pip", "show", absent, cwd=tmp_path).returncode != 0, absent
    # No extra would help: this build has no simulators at all.
    _no_sandbox(bin_dir, tmp_path, "a build with the simulators", "adapters.simulation")

    sim = KiiexSimulator()
    report = sim.add_report()
    async with LoopbackServer(sim.app) as kiiex:
        config = tmp_path / "gateway.toml"
        config.write_text(kiiex_gateway_config(kiiex.url))
        served = await asyncio.create_subprocess_exec(
            bin_dir / "cancelgw", "serve", "--config", config, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, **KIIEX_ENV},
        )  # fmt: skip
        try:
            assert served.stdout is not None
            async with asyncio.timeout(60):
                line = (await served.stdout.readline()).decode()
            port = re.search(r"serving on port (\d+)", line)
            assert port is not None, line
            called = await asyncio.create_subprocess_exec(
                bin_dir / "cancelgw", "cancel", "--target", f"127.0.0.1:{port.group(1)}",
                "kiiex-report", report, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(60):
                out, err = await called.communicate()
            assert called.returncode == 0, err.decode()
            assert out.decode().startswith("ACCEPTED kiiex CancelUserReport")
        finally:
            served.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                assert await served.wait() == 0
    assert sim.calls["CancelUserReport"] == 1
