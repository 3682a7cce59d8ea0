"""`cancelgw`: serve the gateway, run the sandbox, or call CancelJob from a shell."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from adapters import REGISTRY
from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.config import Config, ConfigError, load_config
from gateway.jobs import JobField, JobKind, job_fields, job_values, summary
from gateway.logs import configure_logging
from gateway.registry import Registry
from gateway.server import GatewayServer
from gateway.workers import is_worker, supervise

DEFAULT_TARGET = "127.0.0.1:50051"
TABLES_START, TABLES_END = "<!-- code-tables:start -->\n", "<!-- code-tables:end -->"


def with_code_tables(readme: str, registry: Registry = REGISTRY) -> str:
    """The README with its normalization reference replaced by the current code tables."""
    start = readme.index(TABLES_START) + len(TABLES_START)
    tables = registry.code_tables_markdown()
    return readme[:start] + tables + readme[readme.index(TABLES_END) :]


def _option(field: JobField) -> str:
    return "--" + field.name.replace("_", "-")


def command_line(job: JobKind) -> str:
    """`cancel` arguments that send this job: `kiiex-quote --oms-id 1 1001 1002`."""
    values = job_values(job)
    fields = [f for f in job_fields(type(job)) if f.name in values]
    options = [f"{_option(f)} {values[f.name]}" for f in fields if f.flag or not f.required]
    positionals = [str(values[f.name]) for f in fields if f.required and not f.flag]
    return " ".join([job.cli_name, *options, *positionals])


# Options of `cancel` itself: a job field by one of these names would shadow it.
_CANCEL_OPTIONS = frozenset(
    {"target", "json", "connection", "confirm", "timeout", "idempotency_key", "kind", "job",
     "ca", "cert", "key", "token_env"}
)  # fmt: skip


def _add_job_commands(jobs: argparse._SubParsersAction[Any], registry: Registry) -> None:
    """One subcommand per job kind; its arguments are the job's fields."""
    for kind in registry.job_kinds.values():
        command = jobs.add_parser(kind.cli_name, help=summary(kind))
        command.set_defaults(kind=kind)
        for field in job_fields(kind):
            if field.name in _CANCEL_OPTIONS:
                raise ValueError(f"{kind.__name__}.{field.name}: the name of a cancel option")
            if field.required and not field.flag:
                command.add_argument(field.name, type=field.kind)
            else:
                command.add_argument(
                    _option(field), dest=field.name, type=field.kind, required=field.required
                )


def _parser(registry: Registry) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cancelgw", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the gateway from a TOML config")
    serve.add_argument("--config", type=Path, default=os.environ.get("CANCELGW_CONFIG"))

    sandbox = commands.add_parser("sandbox", help="gateway + built-in upstream simulators")
    sandbox.add_argument("--listen", default=DEFAULT_TARGET)

    codes = commands.add_parser("codes", help="print the normalization tables (Markdown)")
    codes.add_argument("--write", type=Path, help="refresh the tables inside this README")

    cancel = commands.add_parser("cancel", help="call CancelJob and print the envelope")
    cancel.add_argument("--target", default=DEFAULT_TARGET)
    cancel.add_argument("--ca", type=Path, help="CA certificate (PEM): connect with TLS")
    cancel.add_argument("--cert", type=Path, help="client certificate (PEM), for mTLS")
    cancel.add_argument("--key", type=Path, help="client private key (PEM), for mTLS")
    cancel.add_argument(
        "--token-env",
        default="CANCELGW_TOKEN",
        help="environment variable holding the bearer token (sent when set)",
    )
    cancel.add_argument("--json", action="store_true", help="print the response as JSON")
    cancel.add_argument("--connection", default="")
    cancel.add_argument("--confirm", action="store_true", help="wait for confirmation")
    cancel.add_argument(
        "--idempotency-key", default="", help="the same key again replays the stored answer"
    )
    cancel.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    _add_job_commands(cancel.add_subparsers(dest="job", required=True), registry)
    return parser


def _job_request(args: argparse.Namespace) -> gateway_pb2.CancelJobRequest:
    """The request as typed: the gateway, not the CLI, judges the values."""
    request = gateway_pb2.CancelJobRequest(
        connection=args.connection,
        wait_for_confirmation=args.confirm,
        idempotency_key=args.idempotency_key,
    )
    kind: type[JobKind] = args.kind
    message = getattr(request, kind.proto_field)
    message.SetInParent()
    for field in job_fields(kind):
        value = getattr(args, field.name)
        if value is not None:
            setattr(message, field.name, value)
    return request


def _print_response(response: gateway_pb2.CancelJobResponse, as_json: bool) -> None:
    if as_json:
        print(
            json_format.MessageToJson(
                response,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        )
        return
    outcome = gateway_pb2.Outcome.Name(response.outcome).removeprefix("OUTCOME_")
    reason = gateway_pb2.Reason.Name(response.reason).removeprefix("REASON_")
    print(f"{outcome} ({reason}) {response.upstream} {response.operation}")
    print(f"  {response.message}")
    print(
        f"  retryable={response.retryable} attempts={response.attempts} "
        f"replayed={response.replayed} request_id={response.request_id}"
    )
    for leg in response.legs:
        leg_outcome = gateway_pb2.Outcome.Name(leg.outcome).removeprefix("OUTCOME_")
        print(f"  leg {leg.leg}: {leg_outcome} code={leg.upstream_code!r} {leg.upstream_message}")


def _print_error(error: grpc.RpcError) -> None:
    print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            for violation in bad_request.field_violations:
                print(f"  {violation.field}: {violation.description}", file=sys.stderr)


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def _channel(args: argparse.Namespace) -> grpc.Channel:
    """TLS when a CA or a client certificate is given (the system's roots without --ca)."""
    if args.ca is None and args.cert is None:
        return grpc.insecure_channel(args.target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(args.ca),
        private_key=_read(args.key),
        certificate_chain=_read(args.cert),
    )
    return grpc.secure_channel(args.target, credentials)


def _refusal(args: argparse.Namespace, token: str) -> str:
    """Why these options must not be used together, or ""."""
    if (args.cert is None) != (args.key is None):
        return "give --cert and --key together"
    host = args.target.rpartition(":")[0].strip("[]")
    plaintext = args.ca is None and args.cert is None
    if token and plaintext and host not in ("127.0.0.1", "localhost", "::1"):
        return f"will not send ${args.token_env} in plaintext to {host}: give --ca (TLS)"
    return ""


def _cancel(args: argparse.Namespace) -> int:
    token = os.environ.get(args.token_env, "")
    refusal = _refusal(args, token)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with _channel(args) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        try:
            response = stub.CancelJob(_job_request(args), timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as error:
            _print_error(error)
            return 2
    _print_response(response, args.json)
    return 0


def _serve(config_path: Path | None, registry: Registry) -> int:
    if config_path is None:
        print("error: give --config FILE or set CANCELGW_CONFIG", file=sys.stderr)
        return 2
    try:
        config = load_config(config_path, os.environ, registry.option_parsers, registry.job_kinds)
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
    args = _parser(registry).parse_args(argv)
    if args.command == "serve":
        return _serve(args.config, registry)
    if args.command == "sandbox":
        # Imported here: the sandbox needs the simulators, which only development installs.
        from gateway.sandbox import run_sandbox

        return asyncio.run(run_sandbox(args.listen, registry))
    if args.command == "codes":
        if args.write:
            args.write.write_text(with_code_tables(args.write.read_text(), registry))
        else:
            print(registry.code_tables_markdown(), end="")
        return 0
    return _cancel(args)


if __name__ == "__main__":
    sys.exit(main())
