"""A fourth upstream is a proto oneof member + one job class + one adapter module + one
simulator + one registration line: registered from a test, it cancels through the real gRPC
server, the CLI and the sandbox, and nothing in gateway/ or adapters/ names it.

The proto member: the test copies the contract, adds `TicketingJob ticketing_job = 4` to the
`job` oneof, generates stubs from that copy into a temporary folder and runs the gateway in a
child process that imports those stubs instead of the shipped ones (one process cannot hold
two `cancellation.v1` descriptors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "protos" / "cancellation" / "v1" / "gateway.proto"
ONEOF_END = "    ZuoraReportRun zuora_report_run = 3;\n"
MEMBER = "    TicketingJob ticketing_job = 4;\n"
MESSAGE = "\nmessage TicketingJob {\n  string ticket_id = 1;\n  optional int32 priority = 2;\n}\n"


def _stubs_with_a_fourth_member(folder: Path) -> None:
    proto = PROTO.read_text()
    assert ONEOF_END in proto
    patched = folder / "protos" / "cancellation" / "v1" / "gateway.proto"
    patched.parent.mkdir(parents=True)
    patched.write_text(proto.replace(ONEOF_END, ONEOF_END + MEMBER) + MESSAGE)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{folder / 'protos'}",
         f"--python_out={folder}", f"--grpc_python_out={folder}", str(patched)],
        check=True,
    )  # fmt: skip
    for package in ("cancellation", "cancellation/v1"):
        (folder / package / "__init__.py").touch()


def test_a_fourth_upstream_cancels_through_server_cli_and_sandbox(tmp_path: Path) -> None:
    _stubs_with_a_fourth_member(tmp_path)
    child = subprocess.run(
        [sys.executable, "-m", "tests.integration.fourth_upstream.main"],
        cwd=tmp_path,  # first on sys.path: its `cancellation` shadows the shipped stubs
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    assert "with simulators of kiiex, zuora, ticketing" in seen["banner"]
    assert "ticketing-job --priority 2 T1001" in seen["banner"]
    assert seen["example"] == "ticketing-job --priority 2 T1001"
    code, printed = seen["cli"]
    assert (code, printed.split()[:3]) == (0, ["CANCELED", "(UNSPECIFIED)", "ticketing"])
    assert seen["again"] == {"outcome": "OUTCOME_FAILED", "legs": 1}  # closed already: 404
    assert seen["invalid"]["code"] == "INVALID_ARGUMENT"
    assert "ticketing_job.ticket_id: must be letters and digits" in seen["invalid"]["details"]
    assert seen["empty"]["code"] == "INVALID_ARGUMENT"
    assert "ticketing_job" in seen["empty"]["details"]  # "set one of ...", from the registry
    assert seen["calls"] == {"T1001": 2}


def test_nothing_outside_the_test_names_the_fourth_upstream() -> None:
    for folder in ("gateway", "adapters", "simulators", "protos"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".pyi", ".proto"):
                assert "ticketing" not in path.read_text(), path
