"""The arrows point inward: the core imports neither the edges (adapters, simulators, the
gRPC servicer) nor their transports, and only the composition root reaches the registry of
adapters. Read from the import statements themselves, so a new import that breaks a rule
fails here before it is a habit. And the repository stands on its own."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOT = {"server", "sandbox", "cli"}
# The gRPC edge: the only gateway modules that may speak grpc and protobuf stubs.
GRPC_EDGE = {"service", "interceptors", "reflection", "cancel_command", *COMPOSITION_ROOT}
CORE = sorted(
    p.stem for p in (ROOT / "gateway").glob("*.py") if p.stem not in GRPC_EDGE | {"__init__"}
)


def _imports(path: Path) -> set[str]:
    """Top-level package names this module imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imports(path)}


@pytest.mark.parametrize("module", CORE)
def test_the_core_knows_neither_edges_nor_transports(module: str) -> None:
    imported = _packages(ROOT / "gateway" / f"{module}.py")
    edges = {
        "adapters",
        "simulators",
        "stores",
        "cancellation",
        "grpc",
        "httpx2",
        "aiohttp",
        "redis",
    }
    assert not imported & edges


@pytest.mark.parametrize(
    "module", sorted(p.stem for p in (ROOT / "gateway").glob("*.py") if p.stem != "__init__")
)
def test_only_the_composition_root_reaches_the_adapters(module: str) -> None:
    reaches = "adapters" in _packages(ROOT / "gateway" / f"{module}.py")
    assert not reaches or module in COMPOSITION_ROOT


@pytest.mark.parametrize("path", sorted((ROOT / "adapters").glob("*.py")), ids=lambda p: p.name)
def test_adapters_import_only_core_vocabulary(path: Path) -> None:
    edge = {f"gateway.{m}" for m in GRPC_EDGE}
    assert not {name for name in _imports(path) if name in edge}
    assert not _packages(path) & {"grpc", "cancellation", "simulators"}


def test_the_repository_refers_to_nothing_outside_itself() -> None:
    found = subprocess.run(
        ["git", "grep", "-n", "-I", "-E", r"\.\./shared|shared/upstreams|/work/", "--", ".",
         ":!tests/unit/test_architecture.py"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.stdout == ""
