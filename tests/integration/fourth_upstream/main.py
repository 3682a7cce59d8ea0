"""Run in a child process whose `cancellation.v1` stubs were generated from the contract
plus one `ticketing_job` oneof member. Registers the fourth upstream (the one line), starts
the sandbox, and drives it through the CLI and a gRPC client; prints what it saw as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys

import grpc

from adapters import REGISTRY
from cancellation.v1 import gateway_pb2, gateway_pb2_grpc
from gateway import cli
from gateway.registry import Registry
from gateway.sandbox import instructions, sandbox
from tests.integration.fourth_upstream import adapter

WITH_TICKETING = Registry((*REGISTRY.upstreams.values(), adapter.UPSTREAM))  # the one line


async def _call(target: str, request: gateway_pb2.CancelJobRequest) -> dict[str, object]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.CancellationGatewayStub(channel)
        try:
            response = await stub.CancelJob(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            return {"code": error.code().name, "details": error.details()}
        return {"outcome": gateway_pb2.Outcome.Name(response.outcome), "legs": len(response.legs)}


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(list(argv), registry=WITH_TICKETING)
    return code, out.getvalue()


async def main() -> None:
    async with sandbox(registry=WITH_TICKETING) as box:
        example = cli.command_line(box.examples[-1].job)
        code, printed = await asyncio.to_thread(
            _cli, "cancel", "--target", box.target, *example.split()
        )
        ticket = gateway_pb2.TicketingJob(ticket_id="T1001")
        again = await _call(box.target, gateway_pb2.CancelJobRequest(ticketing_job=ticket))
        bad = gateway_pb2.TicketingJob(ticket_id="../etc")
        invalid = await _call(box.target, gateway_pb2.CancelJobRequest(ticketing_job=bad))
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
