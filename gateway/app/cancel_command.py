"""`cancelgw cancel`: one CancelJob from a shell, with an exit code a script can branch on.

Exit codes (`Exit`), one per thing a script would do differently:

    0  ACCEPTED, CANCELED or ALREADY_CANCELED: the cancel went through; or, with
       --validate-only, VALIDATED: it would go through (nothing was sent)
    2  usage: a bad option or value, or options that must not go together
    3  FAILED: nothing was canceled (the envelope says why; `retryable` says whether to retry)
    4  PARTIAL: some legs were canceled, some not
    5  UNKNOWN: the gateway cannot tell whether the cancel landed, or the deadline passed
       once the call was on its way (it may have landed: confirm before retrying)
    6  the gateway answered with a gRPC error (invalid argument, not permitted, rate
       limited, shutting down, ...): no envelope, nothing canceled
    7  no gateway answered: connection refused, name or TLS failure, or the deadline
       passed before a connection was made

With `--json` the envelope, or the error (code, message, ErrorInfo, field violations, retry
delay), is one JSON object on stdout; without it, text: the envelope on stdout, an error on
stderr, printed once. A usage error (exit 2) is always text on stderr: nothing was sent.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway import NAME
from gateway.jobs import JobField, JobKind, job_fields, job_values, summary
from gateway.registry import Registry

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_VARIABLE = "CANCELGW_TARGET"
LONGEST_TIMEOUT = 3600.0


class Exit(enum.IntEnum):
    OK = 0
    USAGE = 2
    FAILED = 3
    PARTIAL = 4
    UNKNOWN = 5
    GATEWAY_ERROR = 6
    UNREACHABLE = 7


_BY_OUTCOME = {
    gateway_pb2.OUTCOME_ACCEPTED: Exit.OK,
    gateway_pb2.OUTCOME_CANCELED: Exit.OK,
    gateway_pb2.OUTCOME_ALREADY_CANCELED: Exit.OK,
    gateway_pb2.OUTCOME_VALIDATED: Exit.OK,
    gateway_pb2.OUTCOME_FAILED: Exit.FAILED,
    gateway_pb2.OUTCOME_PARTIAL: Exit.PARTIAL,
}


def exit_for(response: gateway_pb2.CancelJobResponse) -> Exit:
    """The exit code of an envelope; an outcome this CLI does not know is UNKNOWN."""
    return _BY_OUTCOME.get(response.outcome, Exit.UNKNOWN)


# Options of `cancel` itself: a job field by one of these names would shadow it.
OPTIONS = frozenset(
    {"target", "json", "connection", "confirm", "timeout", "idempotency_key", "request_id",
     "kind", "job", "ca", "cert", "key", "token_env"}
)  # fmt: skip


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= LONGEST_TIMEOUT):
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {LONGEST_TIMEOUT:g}")
    return seconds


def _options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options of `cancel`, on `cancel` itself (with their defaults) and again on each
    job command (without: a default there would overwrite a value given before the job), so
    they may come before or after the job and its ids."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    add = parser.add_argument
    target = os.environ.get(TARGET_VARIABLE) or DEFAULT_TARGET
    add("--target", default=default(target), help=f"gateway host:port (or ${TARGET_VARIABLE})")
    add("--ca", type=Path, default=default(None), help="CA certificate (PEM): connect with TLS")
    add("--cert", type=Path, default=default(None), help="client certificate (PEM), for mTLS")
    add("--key", type=Path, default=default(None), help="client private key (PEM), for mTLS")
    add("--token-env", default=default("CANCELGW_TOKEN"),
        help="environment variable holding the bearer token (sent when set)")  # fmt: skip
    add("--json", action="store_true", default=default(False),
        help="print the envelope, or the error, as one JSON object on stdout")  # fmt: skip
    add("--connection", default=default(""), help="configured connection (empty: the default)")
    add("--confirm", action="store_true", default=default(False),
        help="wait for the upstream's read API to show the job canceled")  # fmt: skip
    add("--reason", default=default(""),
        help="why, for the audit trail (at most 512 printable characters)")  # fmt: skip
    add("--validate-only", action="store_true", default=default(False),
        help="check credentials, permissions, the request and its route; send nothing")  # fmt: skip
    add("--idempotency-key", default=default(""),
        help="the same key again replays the stored answer, never cancels twice")  # fmt: skip
    add("--request-id", default=default(""),
        help="sent as x-request-id, to find the call in the gateway's logs")  # fmt: skip
    add("--timeout", type=_timeout, default=default(30.0),
        help=f"deadline in seconds (0 < t <= {LONGEST_TIMEOUT:g})")  # fmt: skip


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (it holds the exit code table), and each default shown."""


def _flag(field: JobField) -> str:
    return "--" + field.name.replace("_", "-")


def add_cancel(commands: argparse._SubParsersAction[Any], registry: Registry) -> None:
    """`cancel` and one job command under it per registered job kind."""
    cancel = commands.add_parser(
        "cancel",
        help="call CancelJob and print the envelope",
        description=__doc__,
        formatter_class=_Help,
        allow_abbrev=False,  # `--targ` today would break the day an option `--target-x` came
    )
    _options(cancel, defaults=True)
    jobs = cancel.add_subparsers(dest="job", required=True, metavar="JOB")
    for kind in registry.job_kinds.values():
        command = jobs.add_parser(
            kind.cli_name, help=summary(kind), formatter_class=_Help, allow_abbrev=False
        )
        command.set_defaults(kind=kind)
        _options(command, defaults=False)
        for field in job_fields(kind):
            if field.name in OPTIONS:
                raise ValueError(f"{kind.__name__}.{field.name}: the name of a cancel option")
            if field.required and not field.flag:
                command.add_argument(field.name, type=field.kind)
            else:
                command.add_argument(
                    _flag(field), dest=field.name, type=field.kind, required=field.required
                )


def command_line(job: JobKind) -> str:
    """`cancel` arguments that send this job: its subcommand, `--flag value` for options and
    flag fields, then the positional ids (`some-job --account-id 1 1001 1002`)."""
    values = job_values(job)
    fields = [f for f in job_fields(type(job)) if f.name in values]
    options = [f"{_flag(f)} {values[f.name]}" for f in fields if f.flag or not f.required]
    positionals = [str(values[f.name]) for f in fields if f.required and not f.flag]
    return " ".join([job.cli_name, *options, *positionals])


def _request(args: argparse.Namespace) -> gateway_pb2.CancelJobRequest:
    """The request as typed: the gateway, not the CLI, judges the values."""
    request = gateway_pb2.CancelJobRequest(
        connection=args.connection,
        wait_for_confirmation=args.confirm,
        idempotency_key=args.idempotency_key,
        cancellation_reason=args.reason,
        validate_only=args.validate_only,
    )
    kind: type[JobKind] = args.kind
    message = getattr(request, kind.proto_field)
    message.SetInParent()
    for field in job_fields(kind):
        value = getattr(args, field.name)
        if value is None:
            continue
        try:
            setattr(message, field.name, value)
        except ValueError:  # a number past the field's range: nothing a gateway could take
            name = _flag(field) if field.flag or not field.required else field.name
            raise _Unusable(f"{name}: {value} is out of range") from None
    return request


class _Unusable(ValueError):
    """A value the request cannot carry: a usage error, found before anything is sent."""


def _print_envelope(response: gateway_pb2.CancelJobResponse, as_json: bool) -> None:
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
    because = f" ({reason})" if response.reason != gateway_pb2.REASON_UNSPECIFIED else ""
    print(f"{outcome}{because} {response.upstream} {response.operation}")
    print(f"  {response.message}")
    print(
        f"  retryable={response.retryable} attempts={response.attempts} "
        f"replayed={response.replayed} request_id={response.request_id}"
    )
    for leg in response.legs:
        leg_outcome = gateway_pb2.Outcome.Name(leg.outcome).removeprefix("OUTCOME_")
        print(f"  leg {leg.leg}: {leg_outcome} code={leg.upstream_code!r} {leg.upstream_message}")


def describe_error(error: grpc.RpcError) -> dict[str, Any]:
    """A gRPC error as JSON-ready fields: code, message, and the details the gateway sent."""
    described: dict[str, Any] = {"code": error.code().name, "message": error.details() or ""}
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        info, bad, retry = (
            error_details_pb2.ErrorInfo(),
            error_details_pb2.BadRequest(),
            error_details_pb2.RetryInfo(),
        )
        if detail.Unpack(info):
            described.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif detail.Unpack(bad):
            described["field_violations"] = [
                {"field": v.field, "description": v.description} for v in bad.field_violations
            ]
        elif detail.Unpack(retry):
            described["retry_after_seconds"] = retry.retry_delay.ToTimedelta().total_seconds()
    return described


def exit_for_error(described: dict[str, Any], *, connected: bool) -> Exit:
    """UNAVAILABLE without the gateway's ErrorInfo came from the channel: nobody answered.
    A deadline that passed before any connection was made reached no gateway either; once
    connected, the call may have been sent on upstream: the cancel may have landed."""
    answered = described.get("domain") == NAME
    if described["code"] == "UNAVAILABLE" and not answered:
        return Exit.UNREACHABLE
    if described["code"] == "DEADLINE_EXCEEDED":
        return Exit.UNKNOWN if connected or answered else Exit.UNREACHABLE
    return Exit.GATEWAY_ERROR


def _print_error(described: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": described}, indent=2))
        return
    reason = described.get("reason")
    head = f"{described['code']} ({reason})" if reason else described["code"]
    message = described["message"]
    print(f"error: {head}: {message}", file=sys.stderr)
    for violation in described.get("field_violations", ()):
        line = f"{violation['field']}: {violation['description']}"
        if line not in message:  # the message may already say it: each error once
            print(f"  {line}", file=sys.stderr)


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
    """Why these options must not be used together, or a value cannot be sent, or ""."""
    if not args.target:
        return "--target: give host:port"
    if (args.cert is None) != (args.key is None):
        return "give --cert and --key together"
    for option, path in (("--ca", args.ca), ("--cert", args.cert), ("--key", args.key)):
        if path is not None and not path.is_file():
            return f"{option} {path}: not a readable file"
    unsendable = _unsendable(args, token)
    if unsendable:
        return unsendable
    host = args.target.rpartition(":")[0].strip("[]")
    plaintext = args.ca is None and args.cert is None
    if token and plaintext and host not in ("127.0.0.1", "localhost", "::1"):
        return f"will not send ${args.token_env} in plaintext to {host}: give --ca (TLS)"
    return ""


def _unsendable(args: argparse.Namespace, token: str) -> str:
    """A value gRPC cannot carry: metadata is printable ASCII, strings are UTF-8 (a shell
    argument in another encoding arrives as undecodable bytes)."""
    for option, value in (("--request-id", args.request_id), (f"${args.token_env}", token)):
        if value and not (value.isascii() and value.isprintable()):
            return f"{option}: printable ASCII only (it is sent as gRPC metadata)"
    for name, value in vars(args).items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{name.replace('_', '-')}: not valid UTF-8"
    return ""


def _watched(channel: grpc.Channel) -> set[grpc.ChannelConnectivity]:
    """The connectivity states the channel goes through (gRPC reports them on its own
    thread), to tell a deadline spent connecting from one spent in the call."""
    seen: set[grpc.ChannelConnectivity] = set()
    channel.subscribe(seen.add, try_to_connect=False)
    return seen


def run_cancel(args: argparse.Namespace, usage: Callable[[str], NoReturn]) -> int:
    """Sends the call; `usage` reports a usage error (argparse's: prints and exits 2)."""
    token = os.environ.get(args.token_env, "")
    refusal = _refusal(args, token)
    if refusal:
        usage(refusal)
    metadata = [("authorization", f"Bearer {token}")] if token else []
    if args.request_id:
        metadata.append(("x-request-id", args.request_id))
    try:
        request = _request(args)
    except _Unusable as error:
        usage(str(error))
    with _channel(args) as channel:
        seen = _watched(channel)
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        try:
            response = stub.CancelJob(request, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as error:
            described = describe_error(error)
            _print_error(described, args.json)
            return exit_for_error(described, connected=grpc.ChannelConnectivity.READY in seen)
    _print_envelope(response, args.json)
    return exit_for(response)
