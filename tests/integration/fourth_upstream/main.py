"""Run in a scratch checkout that has the fourth upstream: its package in
`adapters/ticketing/`, its line in `adapters/installed.py`, and stubs generated from the
contract plus one `ticketing_job` oneof member. Starts the sandbox, drives it through the
CLI and a gRPC client, and prints what it saw as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys

import grpc

from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.app import cli
from gateway.app.cancel_command import command_line
from gateway.app.sandbox import instructions, sandbox


async def _call(target: str, request: gateway_pb2.CancelJobRequest) -> dict[str, object]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        try:
            response = await stub.CancelJob(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            return {"code": error.code().name, "details": error.details()}
        return {"outcome": gateway_pb2.Outcome.Name(response.outcome), "legs": len(response.legs)}


def _ticket(ticket_id: str) -> gateway_pb2.CancelJobRequest:
    # Only the stubs generated for this child know the member: looked up, not typed.
    ticket = getattr(gateway_pb2, "TicketingJob")(ticket_id=ticket_id)  # noqa: B009
    return gateway_pb2.CancelJobRequest(**{"ticketing_job": ticket})


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


async def main() -> None:
    async with sandbox() as box:
        example = command_line(box.examples[-1].job)
        code, printed = await asyncio.to_thread(
            _cli, "cancel", "--target", box.target, *example.split()
        )
        again = await _call(box.target, _ticket("T1001"))
        invalid = await _call(box.target, _ticket("../etc"))
        empty = await _call(box.target, gateway_pb2.CancelJobRequest())
        report = {
            "banner": instructions(box),
            "example": example,
            "cli": [code, printed],
            "again": again,
            "invalid": invalid,
            "empty": empty,
            "calls": dict(box.simulators["ticketing"].calls),
        }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
