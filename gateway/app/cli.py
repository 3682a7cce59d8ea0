"""`cancelgw`: serve the gateway, run the sandbox, or call CancelJob from a shell."""

from __future__ import annotations

import os
import sys

# `cancelgw cancel` reports each failure once, itself; gRPC's core would also log its own
# view of it (a handshake, a refused connection) on stderr. The core reads this when grpc is
# imported, so it is set before the imports below.
if sys.argv[1:2] == ["cancel"]:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from adapters.installed import REGISTRY
from gateway import VERSION
from gateway.app.cancel_command import DEFAULT_TARGET, add_cancel, run_cancel
from gateway.app.check import check_main
from gateway.app.serve import GatewayServer
from gateway.app.workers import is_worker, supervise
from gateway.config import Config, ConfigError, load_config, reference_markdown
from gateway.logs import configure_logging
from gateway.registry import Registry

# What `cancelgw sandbox` imports beyond `cancelgw serve`: the simulators (which an image
# leaves out) and their web stack (the sandbox extra).
SIMULATORS = "adapters.simulation"
WEB_STACK = frozenset({"starlette", "uvicorn"})
# The reference blocks a docs page may hold, each between its two markers, rendered from
# the code: the upstreams' code tables and the configuration's keys.
RENDERED: dict[tuple[str, str], Callable[[Registry], str]] = {
    ("<!-- code-tables:start -->\n", "<!-- code-tables:end -->"): Registry.code_tables_markdown,
    ("<!-- config-reference:begin -->\n", "<!-- config-reference:end -->"): lambda registry: (
        reference_markdown(registry.option_schemas)
    ),
    ("<!-- secret-fields:begin -->\n", "<!-- secret-fields:end -->"): (
        Registry.secret_fields_markdown
    ),
}


def rendered(page: str, registry: Registry = REGISTRY) -> str:
    """A docs page with each reference block it holds rendered afresh."""
    for (begin, end), render in RENDERED.items():
        if begin in page:
            start = page.index(begin) + len(begin)
            page = page[:start] + render(registry) + page[page.index(end) :]
    return page


def _parser(registry: Registry) -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="cancelgw", description=__doc__, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"cancelgw {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the gateway from a TOML config", formatter_class=formatter
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("CANCELGW_CONFIG"),
        help="the TOML configuration (or $CANCELGW_CONFIG)",
    )
    sandbox = commands.add_parser(
        "sandbox", help="gateway + built-in upstream simulators", formatter_class=formatter
    )
    sandbox.add_argument("--listen", default=DEFAULT_TARGET, help="gRPC address (loopback only)")
    check = commands.add_parser(
        "check", help="validate a config before a rollout; --connect: reach every upstream"
    )
    check.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("CANCELGW_CONFIG"),
        help="the TOML configuration (or $CANCELGW_CONFIG)",
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also DNS, TCP, TLS and the login of every connection (no job is touched)",
    )
    commands.add_parser("codes", help="print the normalization tables (Markdown)")
    docs = commands.add_parser(
        "docs", help="refresh the reference blocks the docs render from the code (make docs)"
    )
    docs.add_argument("pages", type=Path, nargs="+", help="pages to rewrite in place")
    add_cancel(commands, registry)
    return parser


def _serve(config_path: Path | None, registry: Registry) -> int:
    if config_path is None:
        print("error: give --config FILE or set CANCELGW_CONFIG", file=sys.stderr)
        return 2
    try:
        config = load_config(config_path, os.environ, registry.option_schemas, registry.job_kinds)
    except ConfigError as error:
        print(f"error: configuration: {error}", file=sys.stderr)
        return 2
    configure_logging(config.server.log_level)
    if config.server.workers > 1 and not is_worker():
        return supervise(config_path, config)
    return _run(_run_gateway(config, registry), config.server.event_loop)


def _run(main: Coroutine[Any, Any, int], event_loop: str) -> int:
    if event_loop == "uvloop":
        import uvloop  # config checked it is installed

        return uvloop.run(main)
    return asyncio.run(main)


async def _run_gateway(config: Config, registry: Registry) -> int:
    server = GatewayServer(config, registry=registry)
    try:
        port = await server.start()
    except RuntimeError as error:  # the gRPC or the metrics port is taken
        print(f"error: {error}", file=sys.stderr)
        return 1
    await server.serve_until_signalled(
        ready=lambda: print(f"cancellation gateway serving on port {port}", flush=True)
    )
    return 0


def main(argv: list[str] | None = None, registry: Registry = REGISTRY) -> int:
    parser = _parser(registry)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.config, registry)
    if args.command == "sandbox":
        # Imported here: the sandbox needs the simulators and the `sandbox` extra (starlette,
        # uvicorn), which the production image leaves out.
        try:
            from gateway.app.sandbox import run_sandbox
        except ModuleNotFoundError as missing:
            name = missing.name or ""
            if name == SIMULATORS or name.endswith(".simulator"):  # an image's build
                need = "a build with the simulators (a checkout: make run)"
            elif name.partition(".")[0] in WEB_STACK:
                need = "the sandbox extra: pip install 'cancellation-gateway[sandbox]'"
            else:
                raise
            print(f"error: cancelgw sandbox needs {need}; no module {missing.name!r}",
                  file=sys.stderr)  # fmt: skip
            return 1
        return asyncio.run(run_sandbox(args.listen, registry))
    if args.command == "check":
        return check_main(args.config, registry, connect=args.connect)
    if args.command == "codes":
        print(registry.code_tables_markdown(), end="")
        return 0
    if args.command == "docs":
        for page in args.pages:
            page.write_text(rendered(page.read_text(), registry))
        return 0
    return run_cancel(args, parser.error)


if __name__ == "__main__":
    sys.exit(main())
