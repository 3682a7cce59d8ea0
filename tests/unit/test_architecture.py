"""The arrows point inward, module by module (tests/unit/architecture.py holds the rules and
docs/ARCHITECTURE.md draws them); the checker is itself tested on sources that break each
rule, so it is known to fail when it should. And the repository stands on its own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.unit.architecture import (
    Module,
    imports,
    read_tree,
    upstream_packages,
    violations,
)

ROOT = Path(__file__).resolve().parents[2]
TREE = read_tree(ROOT)
UPSTREAMS = upstream_packages(TREE)


def test_the_tree_breaks_no_rule() -> None:
    assert {"kiiex", "zuora"} <= UPSTREAMS
    assert violations(TREE, UPSTREAMS) == []


def test_every_module_of_the_tree_is_read() -> None:
    names = {m.name for m in TREE}
    assert {"gateway.outcomes", "gateway.rpc.servicer", "gateway.app.cli"} <= names
    assert {"adapters.http._send", "adapters.kiiex.adapter", "adapters.installed"} <= names


# Each planted module breaks one rule; the checker must say so.
PLANTED = [
    ("gateway.outcomes", "from gateway.rpc import servicer\n", "core may not import rpc"),
    ("gateway.outcomes", "from gateway import rpc\n", "core may not import rpc"),
    ("gateway.outcomes", "import gateway.app.cli\n", "core may not import app"),
    ("gateway.outcomes", "from .stores import memory\n", "core may not import stores"),
    ("gateway.pipeline", "import grpc\n", "grpc belongs to the app/rpc edge"),
    ("gateway.pipeline", "from httpx2 import Client\n", "httpx2 belongs to"),
    ("gateway.pipeline", "import redis.asyncio\n", "redis belongs to the stores edge"),
    ("gateway.pipeline", "from cancellation.v1 import gateway_pb2\n", "may not import contract"),
    ("gateway.pipeline", "from adapters.kiiex import CODES\n", "core may not import upstream"),
    ("gateway.pipeline", "UPSTREAM = 'Kiiex'\n", "names the upstream 'kiiex'"),
    ("gateway.pipeline", "def zuora_fallback() -> None: ...\n", "names the upstream 'zuora'"),
    ("gateway.rpc.servicer", "from gateway.app import serve\n", "rpc may not import app"),
    ("gateway.rpc.servicer", "from gateway.stores.memory import M\n", "rpc may not import stores"),
    ("gateway.stores.redis", "from gateway.rpc import server\n", "stores may not import rpc"),
    ("gateway.app.cli", "from adapters.kiiex import UPSTREAM\n", "app may not import upstream"),
    ("adapters.http._send", "from adapters.zuora.codes import CODES\n", "http may not import"),
    ("adapters.http._send", "# retries as KIIEX does\n", "names the upstream 'kiiex'"),
    ("adapters.http._send", "from gateway.rpc.servicer import x\n", "http may not import rpc"),
    ("adapters.kiiex.adapter", "from adapters.zuora import codes\n", "another upstream"),
    ("adapters.kiiex.adapter", "from gateway.app import cli\n", "upstream may not import app"),
    ("adapters.kiiex.adapter", "from adapters.simulation import faults\n", "may not import simu"),
    ("adapters.kiiex.adapter", "import starlette\n", "starlette belongs to"),
    ("adapters.kiiex.simulator", "from adapters.zuora.simulator import S\n", "another upstream"),
    ("adapters.simulation.faults", "from adapters.kiiex import jobs\n", "may not import upstream"),
    ("gateway.outcomes", "from google import protobuf\n", "google.protobuf belongs to"),
    ("gateway.outcomes", "import adapters\n", "core may not import package"),
    ("gateway.outcomes", "from .. import adapters\n", "core may not import package"),
    ("gateway.outcomes", "import tests.conftest\n", "tests belongs to"),
    ("gateway.outcomes", "importlib.import_module('gr' + 'pc')\n", "loads a module by name"),
    ("gateway.outcomes", "__import__('httpx2')\n", "loads a module by name"),
    ("adapters.http._send", "import_module('adapters.instal' + 'led')\n", "loads a module by"),
    ("adapters.kiiex.adapter", "from adapters.http._send import send\n", "public face"),
]


@pytest.mark.parametrize(("module", "source", "says"), PLANTED)
def test_the_checker_finds_a_planted_violation(module: str, source: str, says: str) -> None:
    planted = [m for m in TREE if m.name != module]
    original = next(m for m in TREE if m.name == module)
    planted.append(Module(module, original.source + source, original.package))
    found = violations(planted, UPSTREAMS)
    assert any(says in violation for violation in found), found
    assert all(violation.startswith(f"{module}:") for violation in found), found


def test_relative_imports_resolve_to_the_module_they_name() -> None:
    known = {"gateway.rpc", "gateway.rpc.server", "gateway.tracing"}
    module = Module("gateway.rpc.servicer", "from . import server\nfrom ..tracing import x\n")
    assert [name for name, _ in imports(module, known)] == ["gateway.rpc.server", "gateway.tracing"]
    package = Module("gateway.rpc", "from . import server\n", package=True)
    assert [name for name, _ in imports(package, known)] == ["gateway.rpc.server"]


def test_the_repository_refers_to_nothing_outside_itself() -> None:
    found = subprocess.run(
        ["git", "grep", "-n", "-I", "-E", r"\.\./shared|shared/upstreams|/work/", "--", ".",
         ":!tests/unit/test_architecture.py"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.stdout == ""
