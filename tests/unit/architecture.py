"""The rules of the house, read from the code itself, module by module: what each layer may
import, and that the core never names an upstream. docs/ARCHITECTURE.md draws them.

    gateway.app        the processes; may use anything
    gateway.rpc        the gRPC edge: the core and the contract's stubs
    gateway.stores     idempotency stores: the core and their client library
    gateway.*          the core (flat): itself only; no transport, no upstream, no upstream's name
    adapters.installed the composition root's list: the core and the upstream packages
    (only it and gateway.app may load a module by name: `import_module`, `__import__`)
    adapters.http      the shared HTTP edge: the core; names no upstream
    adapters.simulation the simulators' shared parts: the core
    adapters.<name>    one upstream: the core, adapters.http, itself; its `simulator` module
                       also adapters.simulation
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CORE, RPC, APP, STORES = "core", "rpc", "app", "stores"
ROOT, HTTP, SIMULATION, UPSTREAM, SIMULATOR = "root", "http", "simulation", "upstream", "simulator"
CONTRACT, PACKAGE = "contract", "package"

# Which layers each layer may import (its own always; an upstream only its own package).
MAY_IMPORT: dict[str, frozenset[str]] = {
    CORE: frozenset({CORE}),
    STORES: frozenset({CORE}),
    RPC: frozenset({CORE, CONTRACT}),
    APP: frozenset({CORE, RPC, STORES, CONTRACT, ROOT, PACKAGE, SIMULATION}),
    ROOT: frozenset({CORE, UPSTREAM, PACKAGE}),
    HTTP: frozenset({CORE}),
    SIMULATION: frozenset({CORE}),
    UPSTREAM: frozenset({CORE, HTTP}),
    SIMULATOR: frozenset({CORE, HTTP, SIMULATION, UPSTREAM}),
    PACKAGE: frozenset(),
}
# Libraries that belong to an edge: a layer not listed for one may not import it.
EDGE_LIBRARIES: dict[str, frozenset[str]] = {
    "grpc": frozenset({RPC, APP}),
    "grpc_health": frozenset({RPC, APP}),
    "grpc_reflection": frozenset({RPC, APP}),
    "grpc_status": frozenset({RPC, APP}),
    "google.protobuf": frozenset({RPC, APP}),
    "google.rpc": frozenset({RPC, APP}),
    "httpx2": frozenset({HTTP, UPSTREAM, SIMULATOR}),
    "httpx_aiohttp": frozenset({HTTP}),
    "aiohttp": frozenset({HTTP}),
    "redis": frozenset({STORES}),
    "starlette": frozenset({SIMULATION, SIMULATOR}),
    "uvicorn": frozenset({SIMULATION}),
    "tests": frozenset(),
}
# Loading a module by name hides an arrow from every reader: only the processes and the
# composition root's list may.
DYNAMIC_IMPORTERS = frozenset({APP, ROOT})
_LOADERS = frozenset({"import_module", "__import__"})


@dataclass(frozen=True)
class Module:
    name: str
    """Dotted, as imported: `gateway.rpc.servicer`; a package's `__init__` is the package."""
    source: str
    package: bool = False


def read_tree(root: Path, folders: Iterable[str] = ("gateway", "adapters")) -> list[Module]:
    modules = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if package else parts)
            modules.append(Module(name, path.read_text(), package))
    return modules


def upstream_packages(modules: Iterable[Module]) -> set[str]:
    """The upstream names: every package directly under `adapters` but the shared ones."""
    return {
        m.name.split(".")[1]
        for m in modules
        if m.package and m.name.count(".") == 1 and m.name.startswith("adapters.")
    } - {"http", "simulation"}


def layer(name: str, upstreams: Collection[str]) -> str:
    parts = name.split(".")
    if parts[0] == "cancellation":
        return CONTRACT
    if parts[0] == "gateway":
        return {"app": APP, "rpc": RPC, "stores": STORES}.get(
            parts[1] if len(parts) > 1 else "", CORE
        )
    if parts[0] != "adapters":
        return ""  # a library
    if len(parts) == 1:
        return PACKAGE
    if parts[1] in upstreams:
        return SIMULATOR if parts[-1] == "simulator" else UPSTREAM
    return {"installed": ROOT, "http": HTTP, "simulation": SIMULATION}.get(parts[1], PACKAGE)


def imports(module: Module, known: Collection[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import statement, resolved to the module itself
    (`from gateway import tracing` imports `gateway.tracing`), relative ones too."""
    for node in ast.walk(ast.parse(module.source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            ours = (base or "adapters").split(".")[0] in ("gateway", "adapters", "cancellation")
            for alias in node.names:
                child = f"{base}.{alias.name}" if base else alias.name
                # `from google import protobuf` imports google.protobuf; `from gateway
                # import rpc` the module gateway.rpc, and `from gateway.x import name` gateway.x.
                yield (child if child in known or not ours else base), node.lineno


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if not module.package:
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def violations(modules: Iterable[Module], upstreams: Collection[str]) -> list[str]:
    modules = list(modules)
    known = {m.name for m in modules}
    found: list[str] = []
    for module in modules:
        found += _import_violations(module, known, upstreams)
        if module.name.split(".")[0] == "gateway" or layer(module.name, upstreams) == HTTP:
            found += _names_an_upstream(module, upstreams)
    return found


def _import_violations(
    module: Module, known: Collection[str], upstreams: Collection[str]
) -> list[str]:
    own = layer(module.name, upstreams)
    loaders = "/".join(sorted(DYNAMIC_IMPORTERS))
    found = [
        f"{module.name}:{line} loads a module by name: only {loaders} may"
        for line in _dynamic_imports(module)
        if own not in DYNAMIC_IMPORTERS
    ]
    for target, line in imports(module, known):
        if _private_http(module.name, target):
            found.append(f"{module.name}:{line} imports {target}: use adapters.http's public face")
        theirs = layer(target, upstreams)
        where = f"{module.name}:{line} imports {target}"
        if theirs:
            if theirs != own and theirs not in MAY_IMPORT[own]:
                found.append(f"{where}: {own} may not import {theirs}")
            elif _another_upstream(module.name, target, own, theirs):
                found.append(f"{where}: an upstream may not import another upstream")
            continue
        for library, layers in EDGE_LIBRARIES.items():
            if (target == library or target.startswith(library + ".")) and own not in layers:
                found.append(f"{where}: {library} belongs to the {'/'.join(sorted(layers))} edge")
    return found


def _dynamic_imports(module: Module) -> Iterator[int]:
    for node in ast.walk(ast.parse(module.source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _LOADERS:
                yield node.lineno


def _private_http(name: str, target: str) -> bool:
    inside = name.startswith("adapters.http")
    return not inside and target.startswith("adapters.http._")


def _another_upstream(name: str, target: str, own: str, theirs: str) -> bool:
    both = {own, theirs} <= {UPSTREAM, SIMULATOR}
    return both and target.split(".")[1] != name.split(".")[1]


def _names_an_upstream(module: Module, upstreams: Collection[str]) -> list[str]:
    """Identifiers, strings and comments that spell an upstream's name (any case)."""
    found = []
    tokens = tokenize.generate_tokens(io.StringIO(module.source).readline)
    for token in tokens:
        text = token.string.lower()
        for name in upstreams:
            if name.lower() in text:
                found.append(f"{module.name}:{token.start[0]} names the upstream {name!r}")
    return found
