"""`cancelgw check` as a process, as a rollout pipeline runs it: a valid config and a
broken one (every problem a line naming its key), secrets from files and the plaintext
guard, and `--connect` against a live simulator and against a refused port."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from tests.processes import KIIEX_ENV, kiiex_gateway_config

CANCELGW = str(Path(sys.executable).parent / "cancelgw")
SECONDS = 30


async def _check(config: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        CANCELGW, "check", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", **KIIEX_ENV},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), SECONDS)
    assert process.returncode is not None
    return process.returncode, out.decode()


def _written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


async def test_a_valid_config_prints_each_connection_and_no_secret(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("a-password-from-a-file\n")
    text = kiiex_gateway_config("http://127.0.0.1:9").replace(
        'password_env = "KIIEX_PASSWORD"', f'password_file = "{password}"'
    )
    code, out = await _check(_written(tmp_path, text))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == (
        "connection k: kiiex at http://127.0.0.1:9, leaves direct, trusts system roots, "
        "client certificate none, auth username and password login"
    )
    assert lines[-1].startswith("ok: ")
    for secret in ("a-password-from-a-file", *KIIEX_ENV.values()):
        assert secret not in out


async def test_a_broken_config_names_every_problem_and_exits_1(tmp_path: Path) -> None:
    text = kiiex_gateway_config("http://kiiex.example.net", timeout_seconds=-1) + (
        "\n[tracing]\nsample_ratio = 2\n"
    )
    code, out = await _check(_written(tmp_path, text))
    assert code == 1
    assert out.splitlines() == [
        "problem: connections.k.timeout_seconds: must be > 0",
        "problem: tracing.sample_ratio: must be <= 1",
    ]


async def test_plaintext_to_another_host_is_a_problem_naming_the_key(tmp_path: Path) -> None:
    code, out = await _check(_written(tmp_path, kiiex_gateway_config("http://kiiex.example.net")))
    assert code == 1
    assert out.startswith("problem: connections.k.allow_plaintext: http://kiiex.example.net")


async def test_connect_goes_every_step_of_a_live_connection(tmp_path: Path) -> None:
    sim = KiiexSimulator()
    async with LoopbackServer(sim.app) as kiiex:
        code, out = await _check(_written(tmp_path, kiiex_gateway_config(kiiex.url)), "--connect")
    assert code == 0, out
    steps = [line.split(":")[0] for line in out.splitlines()[1:]]
    assert steps == ["k dns", "k tcp", "k login"]
    assert "k login: ok in" in out
    assert sim.calls["AuthenticateUser"] == 1
    assert sum(sim.calls.values()) == 1  # no job touched


async def test_connect_to_a_refused_port_fails_at_tcp_and_exits_1(
    tmp_path: Path, refused_url: str
) -> None:
    code, out = await _check(_written(tmp_path, kiiex_gateway_config(refused_url)), "--connect")
    assert code == 1
    assert "k dns: ok in" in out
    assert "k tcp: FAILED ConnectionRefusedError" in out
    assert "k login" not in out
