"""A gateway error as the rich gRPC status a client sees: the code and ErrorInfo reason from
`gateway.errors.STATUS`, RetryInfo when the caller should wait, and BadRequest naming each
field at fault."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway import NAME
from gateway.errors import CallerRateLimited, GatewayError, InvalidArgument, status_of
from gateway.rpc.envelope import duration


def rich_status(error: GatewayError) -> grpc.Status:
    """A gateway error as a gRPC status with its details."""
    code, reason = status_of(error)
    details = [error_details_pb2.ErrorInfo(reason=reason, domain=NAME, metadata=error.metadata)]
    if isinstance(error, CallerRateLimited):
        details.append(error_details_pb2.RetryInfo(retry_delay=duration(error.retry_after)))
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    packed = []
    for detail in details:
        container = any_pb2.Any()
        container.Pack(detail)
        packed.append(container)
    status = status_pb2.Status(
        code=grpc.StatusCode[code].value[0], message=error.message, details=packed
    )
    return rpc_status.to_status(status)
