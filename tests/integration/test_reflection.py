"""Server reflection as grpcurl and client libraries use it, under `grpc.reflection.v1`
and `grpc.reflection.v1alpha`, over real gRPC on loopback: the services are listed, and the
contract's file (with its dependencies) comes back for a symbol, so a client can build
requests from it alone."""

from __future__ import annotations

from typing import TypeAlias

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from gateway.app.serve import GatewayServer

VERSIONS = ("grpc.reflection.v1", "grpc.reflection.v1alpha")
Ask: TypeAlias = reflection_pb2.ServerReflectionRequest


@pytest.fixture
async def target(kiiex_gateway: tuple[object, GatewayServer]) -> str:
    return f"127.0.0.1:{kiiex_gateway[1].port}"


async def _ask(target: str, version: str, request: Ask) -> reflection_pb2.ServerReflectionResponse:
    """One request on the version's stream (the messages are the same in both)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(
            f"/{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=Ask.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(iter([request]))
        replies = [reply async for reply in call]
    (reply,) = replies
    return reply


@pytest.mark.parametrize("version", VERSIONS)
async def test_reflection_lists_every_service(target: str, version: str) -> None:
    reply = await _ask(target, version, Ask(list_services=""))
    names = {service.name for service in reply.list_services_response.service}
    assert names == {
        "cancellation.v1.CancellationGateway",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }


@pytest.mark.parametrize("version", VERSIONS)
async def test_reflection_describes_the_contract(target: str, version: str) -> None:
    reply = await _ask(
        target, version, Ask(file_containing_symbol="cancellation.v1.CancellationGateway")
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    (contract,) = [f for f in files if f.package == "cancellation.v1"]
    assert [m.name for m in contract.service[0].method] == ["CancelJob"]
    assert {"CancelJobRequest", "CancelJobResponse"} <= {m.name for m in contract.message_type}


@pytest.mark.parametrize("version", VERSIONS)
async def test_the_reflection_service_describes_itself(target: str, version: str) -> None:
    reply = await _ask(target, version, Ask(file_containing_symbol=f"{version}.ServerReflection"))
    (file,) = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    assert file.package == version
    (method,) = file.service[0].method
    assert method.input_type == f".{version}.ServerReflectionRequest"


async def test_an_unknown_symbol_is_not_found_not_a_crash(target: str) -> None:
    reply = await _ask(target, VERSIONS[0], Ask(file_containing_symbol="no.such.Service"))
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
