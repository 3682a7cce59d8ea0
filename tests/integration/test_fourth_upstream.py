"""A fourth upstream is one package + one line (docs/ADDING_AN_UPSTREAM.md), proved on a
scratch checkout: the package in `tests/integration/fourth_upstream/ticketing/` goes to
`adapters/ticketing/`, its name to `adapters/installed.py`, a `ticketing_job` member to the
contract (and so the stubs), and nothing else changes; it then cancels through the real gRPC
server, the CLI and the sandbox. And in the real tree, an upstream is named only where the
claim allows: its package, the composition root's line, the contract, docs, tests, deploy
examples and dashboards."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.checkout import ROOT, tracked_copy, tracked_files

FIXTURE = ROOT / "tests" / "integration" / "fourth_upstream" / "ticketing"
FIXTURE_MODULE = "tests.integration.fourth_upstream.ticketing"
PROTO = Path("protos") / "cancellation" / "v1" / "gateway.proto"
ONEOF_END = "    ZuoraReportRun zuora_report_run = 3;\n"
MEMBER = "    TicketingJob ticketing_job = 4;\n"
MESSAGE = "\nmessage TicketingJob {\n  string ticket_id = 1;\n  optional int32 priority = 2;\n}\n"
INSTALLED = Path("adapters") / "installed.py"


def _add_the_upstream(checkout: Path) -> None:
    """What a developer adding the upstream does; nothing more."""
    package = checkout / "adapters" / "ticketing"
    shutil.copytree(FIXTURE, package, ignore=shutil.ignore_patterns("__pycache__"))
    for module in package.glob("*.py"):
        module.write_text(module.read_text().replace(FIXTURE_MODULE, "adapters.ticketing"))
    installed = checkout / INSTALLED
    text = installed.read_text()
    assert '    "zuora",\n' in text
    installed.write_text(text.replace('    "zuora",\n', '    "zuora",\n    "ticketing",\n'))
    proto = checkout / PROTO
    assert ONEOF_END in proto.read_text()
    proto.write_text(proto.read_text().replace(ONEOF_END, ONEOF_END + MEMBER) + MESSAGE)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{checkout / 'protos'}",
         f"--python_out={checkout}", f"--grpc_python_out={checkout}", str(proto)],
        check=True,
    )  # fmt: skip


def _changed(checkout: Path) -> set[str]:
    tracked = set(tracked_files())
    files = {str(p.relative_to(checkout)) for p in checkout.rglob("*") if p.is_file()}
    return {
        name
        for name in files
        if "__pycache__" not in name
        and (name not in tracked or not filecmp.cmp(ROOT / name, checkout / name, shallow=False))
    }


def test_a_fourth_upstream_is_one_package_and_one_line(tmp_path: Path) -> None:
    checkout = tracked_copy(tmp_path / "checkout")
    _add_the_upstream(checkout)

    changed = _changed(checkout)
    package = {name for name in changed if name.startswith("adapters/ticketing/")}
    assert {f"adapters/ticketing/{m}.py" for m in ("__init__", "jobs", "adapter")} <= package
    stubs = {name for name in changed if name.startswith("cancellation/v1/")}
    assert changed == package | stubs | {str(INSTALLED), str(PROTO)}
    added = set((checkout / INSTALLED).read_text().splitlines())
    assert added - set((ROOT / INSTALLED).read_text().splitlines()) == {'    "ticketing",'}

    child = subprocess.run(
        [sys.executable, "-m", "tests.integration.fourth_upstream.main"],
        cwd=checkout,  # first on sys.path: the checkout's packages, not this one's
        env={**os.environ, "PYTHONPATH": str(checkout)},
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
    assert (code, printed.split()[:3]) == (0, ["CANCELED", "ticketing", "CloseTicket"])
    assert seen["again"] == {"outcome": "OUTCOME_FAILED", "legs": 1}  # closed already: 404
    assert seen["invalid"]["code"] == "INVALID_ARGUMENT"
    assert "ticketing_job.ticket_id: must be letters and digits" in seen["invalid"]["details"]
    assert seen["empty"]["code"] == "INVALID_ARGUMENT"
    assert "ticketing_job" in seen["empty"]["details"]  # "set one of ...", from the registry
    assert seen["calls"] == {"T1001": 2}


def test_nothing_outside_the_test_names_the_fourth_upstream() -> None:
    for folder in ("gateway", "adapters", "protos", "cancellation"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".pyi", ".proto"):
                assert "ticketing" not in path.read_text(), path


# Where an upstream's name may stand besides its own package (the claim of
# docs/ADDING_AN_UPSTREAM.md): the contract and its stubs, the composition root's line, docs,
# tests and benchmarks, example configuration, deploy examples and dashboards.
ALLOWED = (
    "protos/", "cancellation/", "contract/", "adapters/installed.py",
    "docs/", "README.md", "tests/", "benchmarks/", "bench.json", "config/", "deploy/",
)  # fmt: skip


def test_an_upstream_is_named_only_in_its_package_and_where_the_claim_allows() -> None:
    for upstream in ("kiiex", "zuora"):
        named = subprocess.run(
            ["git", "grep", "-il", upstream, "--", ".", f":!adapters/{upstream}/"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        assert [name for name in named if not name.startswith(ALLOWED)] == [], upstream
    root_line = [
        line for line in (ROOT / INSTALLED).read_text().splitlines() if "zuora" in line.lower()
    ]
    assert root_line == ['    "zuora",']
