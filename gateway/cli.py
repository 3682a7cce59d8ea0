"""`cancelgw`: serve the gateway, run the sandbox, or call CancelJob from a shell."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from adapters import OPTION_PARSERS, code_tables_markdown
from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.config import ConfigError, load_config
from gateway.logs import configure_logging
from gateway.server import GatewayServer

DEFAULT_TARGET = "127.0.0.1:50051"
TABLES_START, TABLES_END = "<!-- code-tables:start -->\n", "<!-- code-tables:end -->"


def with_code_tables(readme: str) -> str:
    """The README with its normalization reference replaced by the current code tables."""
    start = readme.index(TABLES_START) + len(TABLES_START)
    return readme[:start] + code_tables_markdown() + readme[readme.index(TABLES_END) :]


def _parser() -> argparse.ArgumentParser:
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
    cancel.add_argument("--json", action="store_true", help="print the response as JSON")
    cancel.add_argument("--connection", default="")
    cancel.add_argument("--confirm", action="store_true", help="wait for confirmation")
    cancel.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    jobs = cancel.add_subparsers(dest="job", required=True)
    report = jobs.add_parser("kiiex-report", help="KIIEX CancelUserReport")
    report.add_argument("user_report_id")
    quote = jobs.add_parser("kiiex-quote", help="KIIEX CancelQuote (both legs)")
    quote.add_argument("--oms-id", type=int, required=True)
    quote.add_argument("--account-id", type=int)
    quote.add_argument("--instrument-id", type=int)
    quote.add_argument("bid_quote_id", type=int)
    quote.add_argument("ask_quote_id", type=int)
    run = jobs.add_parser("zuora-run", help="Zuora: cancel a report run")
    run.add_argument("report_run_id")
    return parser


def _job_request(args: argparse.Namespace) -> gateway_pb2.CancelJobRequest:
    request = gateway_pb2.CancelJobRequest(
        connection=args.connection, wait_for_confirmation=args.confirm
    )
    if args.job == "kiiex-report":
        request.kiiex_user_report.user_report_id = args.user_report_id
    elif args.job == "kiiex-quote":
        request.kiiex_quote.CopyFrom(
            gateway_pb2.KiiexQuote(
                oms_id=args.oms_id,
                account_id=args.account_id,
                instrument_id=args.instrument_id,
                bid_quote_id=args.bid_quote_id,
                ask_quote_id=args.ask_quote_id,
            )
        )
    else:
        request.zuora_report_run.report_run_id = args.report_run_id
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
        f"request_id={response.request_id}"
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


def _cancel(args: argparse.Namespace) -> int:
    with grpc.insecure_channel(args.target) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        try:
            response = stub.CancelJob(_job_request(args), timeout=args.timeout)
        except grpc.RpcError as error:
            _print_error(error)
            return 2
    _print_response(response, args.json)
    return 0


async def _serve(config_path: Path | None) -> int:
    if config_path is None:
        print("error: give --config FILE or set CANCELGW_CONFIG", file=sys.stderr)
        return 2
    try:
        config = load_config(config_path, os.environ, OPTION_PARSERS)
    except ConfigError as error:
        print(f"error: configuration: {error}", file=sys.stderr)
        return 2
    configure_logging(config.server.log_level)
    server = GatewayServer(config)
    try:
        port = await server.start()
    except RuntimeError as error:  # the gRPC or the metrics port is taken
        print(f"error: {error}", file=sys.stderr)
        return 1
    await server.serve_until_signalled(
        ready=lambda: print(f"cancellation gateway serving on port {port}", flush=True)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return asyncio.run(_serve(args.config))
    if args.command == "sandbox":
        from gateway.sandbox import run_sandbox

        return asyncio.run(run_sandbox(args.listen))
    if args.command == "codes":
        if args.write:
            args.write.write_text(with_code_tables(args.write.read_text()))
        else:
            print(code_tables_markdown(), end="")
        return 0
    return _cancel(args)


if __name__ == "__main__":
    sys.exit(main())
