"""A grpc.aio ServicerContext stand-in for unit tests of the gRPC edge: it records what a
handler sends and aborts the way grpc.aio does (AbortError), with no server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc_status import rpc_status


class FakeContext:
    def __init__(
        self,
        metadata: Sequence[tuple[str, str]] = (),
        *,
        time_remaining: float | None = 10.0,
        cert_names: Sequence[bytes] = (),
    ) -> None:
        self._metadata = tuple(metadata)
        self._time_remaining = time_remaining
        self._auth = {"x509_subject_alternative_name": list(cert_names)} if cert_names else {}
        self.initial_metadata: tuple[tuple[str, str], ...] = ()
        self.status: grpc.Status | None = None
        self._code: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def time_remaining(self) -> float | None:
        return self._time_remaining

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def code(self) -> grpc.StatusCode | None:
        return self._code

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.initial_metadata = tuple(metadata)

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.status, self._code = status, status.code
        raise grpc.aio.AbortError()

    def details(self) -> dict[str, Any]:
        """The aborted status's ErrorInfo reason and BadRequest fields."""
        from google.rpc import error_details_pb2

        assert self.status is not None
        found: dict[str, Any] = {"code": self.status.code.name, "fields": []}
        proto = rpc_status.from_call(_Call(self.status))
        assert proto is not None
        for detail in proto.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                found["reason"] = info.reason
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                found["fields"] = [v.field for v in bad.field_violations]
        return found


class _Call:
    """What `rpc_status.from_call` reads of a finished call."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return str(self._status.details)

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata
