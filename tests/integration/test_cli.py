"""The `cancelgw` command as a user runs it: real processes, real ports, real signals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from adapters.kiiex.simulator import KiiexSimulator
from adapters.simulation.loopback import LoopbackServer
from gateway import VERSION
from tests.processes import serve

CANCELGW = str(Path(sys.executable).parent / "cancelgw")
STARTUP_SECONDS = 20.0


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        CANCELGW, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), STARTUP_SECONDS)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _read_until(stream: asyncio.StreamReader, marker: str) -> str:
    """Reads lines until one contains `marker`, within a bound."""
    seen = ""
    async with asyncio.timeout(STARTUP_SECONDS):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"process ended before printing {marker!r}: {seen}")
            seen += line.decode()
    return seen


def _target(banner: str) -> str:
    """The gRPC address a sandbox banner announces."""
    found = re.search(r"gRPC on (\S+),", banner)
    assert found is not None, banner
    return found.group(1)


@pytest.fixture
async def sandbox_process() -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    process = await asyncio.create_subprocess_exec(
        CANCELGW, "sandbox", "--listen", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    banner = await _read_until(process.stdout, "CancelJob")
    yield process, banner
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), STARTUP_SECONDS)


async def test_sandbox_examples_work_as_printed(
    sandbox_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    process, banner = sandbox_process
    examples = re.findall(r"^\s+\.venv/bin/cancelgw (cancel .+)$", banner, re.MULTILINE)
    outputs = [await _run(*example.split()) for example in examples]
    assert [(code, out.split()[:3]) for code, out, _ in outputs] == [
        (0, ["ACCEPTED", "kiiex", "CancelUserReport"]),  # no reason: none in brackets
        (3, ["FAILED", "(NOT_FOUND)", "kiiex"]),
        (0, ["ACCEPTED", "kiiex", "CancelQuote"]),
        (0, ["CANCELED", "zuora", "DeleteReportRun"]),
        (3, ["FAILED", "(NOT_FOUND)", "zuora"]),
    ]
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), STARTUP_SECONDS) == 0


async def test_validate_only_exits_0_and_a_reason_too_long_is_a_gateway_error(
    sandbox_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    _, banner = sandbox_process
    run = "ff808081529f4e3401529fd61f080074"
    target = ("--target", _target(banner))
    code, out, _ = await _run("cancel", *target, "--validate-only", "--reason", "rehearsal",
                              "zuora-run", run)  # fmt: skip
    assert code == 0
    assert out.split()[:3] == ["VALIDATED", "zuora", "DeleteReportRun"]
    assert "would cancel zuora DeleteReportRun" in out
    code, _, err = await _run("cancel", *target, "--reason", "x" * 600, "zuora-run", run)
    assert code == 6
    assert "cancellation_reason: must be at most 512 characters" in err
    code, out, _ = await _run("cancel", *target, "--json", "zuora-run", run)
    assert (code, json.loads(out)["outcome"]) == (0, "OUTCOME_CANCELED")  # the rehearsal left it


async def test_cancel_prints_the_bad_field_and_fails(
    sandbox_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    _, banner = sandbox_process
    code, _, err = await _run("cancel", "--target", _target(banner), "kiiex-report", "nope")
    assert code == 6
    assert err.startswith("error: INVALID_ARGUMENT (INVALID_ARGUMENT): ")
    assert err.count("kiiex_user_report.user_report_id") == 1, "each error printed once"


async def test_bad_config_exits_non_zero_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[connections.k]\nupstream = "kiiex"\nbase_url = 42\n'
        'username_env = "U"\npassword_env = "P"\n'
    )
    code, out, err = await _run("serve", "--config", str(config), env={"U": "user", "P": "pass"})
    assert code == 2
    assert "connections.k.base_url" in err
    assert "Traceback" not in err
    assert "serving" not in out


def _serve_config(tmp_path: Path, listen: str) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\nlisten = "{listen}"\nmetrics_listen = ""\nallow_unauthenticated = true\n'
        '[connections.k]\nupstream = "kiiex"\nbase_url = "http://127.0.0.1:9"\n'
        'username_env = "U"\npassword_env = "P"\n'
    )
    return config


async def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = _serve_config(tmp_path, "127.0.0.1:0")
    process = await asyncio.create_subprocess_exec(
        CANCELGW, "serve", "--config", str(config), stdout=asyncio.subprocess.PIPE,
        env={"U": "user", "P": "pass"},
    )  # fmt: skip
    assert process.stdout is not None
    await _read_until(process.stdout, "serving on port")
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), STARTUP_SECONDS) == 0


async def test_serve_on_a_port_in_use_fails_naming_the_address(
    tmp_path: Path, sandbox_process: tuple[asyncio.subprocess.Process, str]
) -> None:
    taken = _target(sandbox_process[1])
    config = _serve_config(tmp_path, taken)
    code, out, err = await _run("serve", "--config", str(config), env={"U": "u", "P": "p"})
    assert code == 1
    assert f"cannot listen on {taken}: the address is in use" in err
    assert "serving" not in out
    assert "Traceback" not in err


async def test_sandbox_on_a_port_in_use_fails_naming_the_address(
    sandbox_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    taken = _target(sandbox_process[1])
    code, out, err = await _run("sandbox", "--listen", taken)
    assert code == 1
    assert f"cannot listen on {taken}" in err
    assert "CancelJob" not in out  # no banner: it never served


async def test_cancel_with_an_idempotency_key_replays_the_second_time(
    sandbox_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    target = _target(sandbox_process[1])
    run = re.search(r"(zuora-run \S+)\n", sandbox_process[1])
    assert run is not None
    argv = ("cancel", "--target", target, "--idempotency-key", "cli-key", *run.group(1).split())
    first, again = await _run(*argv), await _run(*argv)
    assert first[0] == again[0] == 0
    assert first[1].startswith("CANCELED")
    assert "replayed=False" in first[1]
    assert again[1].startswith("CANCELED")
    assert "replayed=True" in again[1]


async def test_cancel_speaks_mtls_with_a_token_from_the_environment(tmp_path: Path) -> None:
    ca = trustme.CA()
    files = {}
    for name, issued in (("server", ca.issue_cert("127.0.0.1")),
                         ("client", ca.issue_cert("ops-cli", common_name="ops-cli"))):  # fmt: skip
        files[f"{name}.crt"] = tmp_path / f"{name}.crt"
        files[f"{name}.key"] = tmp_path / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(files[f"{name}.crt"]))
        issued.private_key_pem.write_to_path(str(files[f"{name}.key"]))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    token = "cli-token-d41d8"
    sim = KiiexSimulator()
    report = sim.add_report()
    async with LoopbackServer(sim.app) as kiiex:
        config = f"""
[server]
listen = "127.0.0.1:0"
metrics_listen = ""
[server.tls]
cert_file = "{files["server.crt"]}"
key_file = "{files["server.key"]}"
client_ca_file = "{tmp_path / "ca.pem"}"
[connections.k]
upstream = "kiiex"
base_url = "{kiiex.url}"
username_env = "U"
password_env = "P"
[[callers]]
name = "ops"
token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"
jobs = ["kiiex_user_report"]
"""
        served = await serve(tmp_path, config, {"U": "operator", "P": "operator-pass"})
        tls = ("--ca", str(tmp_path / "ca.pem"), "--cert", str(files["client.crt"]),
               "--key", str(files["client.key"]))  # fmt: skip
        argv = ("cancel", "--target", served.target, *tls, "kiiex-report", report)
        env = {**os.environ, "CANCELGW_TOKEN": token}
        served_ok = await _run(*argv, env=env)
        no_token = await _run(*argv, env={k: v for k, v in env.items() if k != "CANCELGW_TOKEN"})
        served.process.terminate()
        await served.process.wait()
    assert (served_ok[0], served_ok[1].split()[:1]) == (0, ["ACCEPTED"]), served_ok[2]
    assert no_token[0] != 0
    assert "UNAUTHENTICATED" in no_token[2]  # the certificate names no caller: the token did


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--target", "gateway.example:443"), "will not send $CANCELGW_TOKEN in plaintext"),
        (("--target", "127.0.0.1:1", "--cert", "c.pem"), "give --cert and --key together"),
    ],
)
async def test_cancel_refuses_to_send_credentials_carelessly(
    extra: tuple[str, ...], message: str
) -> None:
    env = {**os.environ, "CANCELGW_TOKEN": "t0ken"}
    code, _, err = await _run("cancel", *extra, "kiiex-report", "x", env=env)
    assert (code, message in err) == (2, True)


def _example(banner: str, job: str) -> list[str]:
    """The first `cancel` example the sandbox printed for `job`, as arguments after `cancel`."""
    found = re.search(rf"cancelgw cancel (?:--target \S+ )?({job} [^\n#]+?)\s*(?:\n|#)", banner)
    assert found is not None, banner
    return found.group(1).split()


async def test_exit_codes_follow_the_outcome(
    sandbox_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    banner = sandbox_process[1]
    target = ("--target", _target(banner))
    quote = _example(banner, "kiiex-quote")  # kiiex-quote --oms-id 1 --instrument-id 1 BID ASK
    accepted = await _run("cancel", *target, *_example(banner, "kiiex-report"))
    partial = await _run("cancel", *target, *quote[:-1], "999999")  # no such ask quote
    failed = await _run("cancel", *target, "kiiex-report", "00000000-0000-4000-8000-000000000000")
    assert [r[0] for r in (accepted, failed, partial)] == [0, 3, 4], (accepted, failed, partial)
    assert partial[1].startswith("PARTIAL")


async def test_flags_may_follow_the_ids_and_json_covers_errors_too(
    sandbox_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    banner = sandbox_process[1]
    report = _example(banner, "kiiex-report")
    code, out, _ = await _run(
        "cancel", *report, "--target", _target(banner), "--confirm", "--json",
        "--request-id", "rq-cli-1",
    )  # fmt: skip
    envelope = json.loads(out)
    assert (code, envelope["outcome"], envelope["request_id"]) == (
        0,
        "OUTCOME_CANCELED",
        "rq-cli-1",
    )
    code, out, err = await _run(
        "cancel", "kiiex-report", "nope", "--json", "--target", _target(banner)
    )
    error = json.loads(out)["error"]
    assert (code, err) == (6, "")
    assert (error["code"], error["reason"], error["domain"]) == (
        "INVALID_ARGUMENT", "INVALID_ARGUMENT", "cancellation-gateway"
    )  # fmt: skip
    (violation,) = error["field_violations"]
    assert violation["field"] == "kiiex_user_report.user_report_id"


async def test_the_target_comes_from_the_environment(
    sandbox_process: tuple[asyncio.subprocess.Process, str],
) -> None:
    banner = sandbox_process[1]
    env = {**os.environ, "CANCELGW_TARGET": _target(banner)}
    code, out, _ = await _run("cancel", *_example(banner, "kiiex-report"), env=env)
    assert (code, out.split()[0]) == (0, "ACCEPTED")


async def test_no_gateway_listening_exits_7_and_says_so_once(refused_url: str) -> None:
    target = refused_url.removeprefix("http://")
    code, out, err = await _run("cancel", "--target", target, "--timeout", "5", "kiiex-report", "x")
    assert (code, out) == (7, "")
    assert err.startswith("error: UNAVAILABLE: ")
    assert err.count("\n") == 1
    code, out, _ = await _run("cancel", "--target", target, "--json", "kiiex-report", "x")
    assert (code, json.loads(out)["error"]["code"]) == (7, "UNAVAILABLE")


class _DropsTheCancel:
    """A KIIEX that logs in, then closes the connection on every cancel it has read: the
    cancel may have landed, and no answer says so."""

    def __init__(self) -> None:
        self.cancels = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        if b"/AuthenticateUser" in head.split(b"\r\n")[0]:
            body = json.dumps({"Authenticated": True, "SessionToken": "s-123456", "User": {}})
            writer.write(
                f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                f"{len(body)}\r\nconnection: close\r\n\r\n{body}".encode()
            )
            await writer.drain()
        else:
            self.cancels += 1
            await self.cancelled(reader)
        writer.close()

    async def cancelled(self, reader: asyncio.StreamReader) -> None:
        """What it does once it has read a cancel: nothing more (the connection closes)."""


class _SitsOnTheCancel(_DropsTheCancel):
    """Reads the cancel and never answers, until the gateway hangs up."""

    async def cancelled(self, reader: asyncio.StreamReader) -> None:
        await reader.read()


def _kiiex_config(port: int) -> str:
    return f"""
[server]
listen = "127.0.0.1:0"
metrics_listen = ""
allow_unauthenticated = true
[connections.k]
upstream = "kiiex"
base_url = "http://127.0.0.1:{port}"
username_env = "U"
password_env = "P"
"""


async def test_an_answer_lost_after_the_cancel_went_out_exits_5(tmp_path: Path) -> None:
    upstream = _DropsTheCancel()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    served = await serve(tmp_path, _kiiex_config(port), {"U": "operator", "P": "operator-pass"})
    report = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"
    code, out, _ = await _run("cancel", "--target", served.target, "kiiex-report", report)
    served.process.terminate()
    await served.process.wait()
    server.close()
    assert (code, out.split()[0]) == (5, "UNKNOWN")
    assert upstream.cancels >= 1


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "soon", "3601"])
async def test_a_bad_timeout_is_a_usage_error(timeout: str) -> None:
    code, out, err = await _run("cancel", "--timeout", timeout, "kiiex-report", "x")
    assert (code, out) == (2, "")
    assert "--timeout" in err
    assert "Traceback" not in err


async def test_version_and_help_show_what_there_is() -> None:
    code, out, _ = await _run("--version")
    assert (code, out) == (0, f"cancelgw {VERSION}\n")
    code, out, _ = await _run("cancel", "--help")
    assert code == 0
    flat = " ".join(out.split())  # argparse wraps help text at the terminal's width
    assert "(default: 127.0.0.1:50051)" in flat
    assert "(default: 30.0)" in flat
    for exit_code in (
        "0  ACCEPTED",
        "3  FAILED",
        "4  PARTIAL",
        "5  UNKNOWN",
        "6  the gateway",
        "7  no gateway",
    ):
        assert exit_code in out
    code, out, _ = await _run("serve", "--help")
    assert "$CANCELGW_CONFIG" in out


async def test_a_deadline_after_the_call_went_out_exits_5_before_any_connection_7(
    tmp_path: Path,
) -> None:
    upstream = _SitsOnTheCancel()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    served = await serve(tmp_path, _kiiex_config(port), {"U": "operator", "P": "operator-pass"})
    report = "8e3a7f52-1c9d-4b6e-a0f4-2d5b9c7e1a30"
    sent = await _run("cancel", "--target", served.target, "--timeout", "1", "--json",
                      "kiiex-report", report)  # fmt: skip
    served.process.terminate()
    await served.process.wait()
    server.close()
    assert (sent[0], json.loads(sent[1])["error"]["code"]) == (5, "DEADLINE_EXCEEDED")
    assert upstream.cancels == 1  # it reached the upstream: it may have landed

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never speaks HTTP/2: no gRPC connection is made

    hole = await asyncio.start_server(silent, "127.0.0.1", 0)
    target = f"127.0.0.1:{hole.sockets[0].getsockname()[1]}"
    unsent = await _run("cancel", "--target", target, "--timeout", "1", "kiiex-report", report)
    hole.close()
    assert unsent[0] == 7, unsent


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("kiiex-report", "\udcff"), "user-report-id: not valid UTF-8"),
        (("--connection", "\udcff", "kiiex-report", "x"), "connection: not valid UTF-8"),
        (("--request-id", "a\nb", "kiiex-report", "x"), "--request-id: printable ASCII only"),
        (("kiiex-quote", "--oms-id", "99999999999999999999999", "1", "2"), "--oms-id: 9999"),
        (("--target", "", "kiiex-report", "x"), "--target: give host:port"),
        (("--targ=127.0.0.1:1", "kiiex-report", "x"), "unrecognized arguments: --targ"),
    ],
    ids=["bad-bytes-id", "bad-bytes-connection", "newline-request-id", "int-range",
         "empty-target", "abbreviation"],
)  # fmt: skip
async def test_values_grpc_cannot_carry_are_usage_errors(argv: tuple[str, ...], named: str) -> None:
    code, out, err = await _run("cancel", *argv)
    assert (code, out) == (2, ""), err
    assert named in err
    assert "Traceback" not in err


async def test_a_tls_failure_is_said_once_without_grpcs_own_log_lines(tmp_path: Path) -> None:
    async def plaintext(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(plaintext, "127.0.0.1", 0)
    target = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    (tmp_path / "ca.pem").write_text("not a certificate")
    code, out, err = await _run(
        "cancel", "--target", target, "--ca", str(tmp_path / "ca.pem"), "--timeout", "3",
        "kiiex-report", "x",
    )  # fmt: skip
    server.close()
    assert (code, out) == (7, "")
    assert err.startswith("error: UNAVAILABLE: ")
    assert err.count("\n") == 1, err  # gRPC's core would add its own lines about the handshake
