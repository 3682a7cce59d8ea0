"""The proto contract: generated stubs match the .proto, and no field is ever renumbered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor

from cancellation.v1 import gateway_pb2

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("gateway_pb2.py", "gateway_pb2_grpc.py", "gateway_pb2.pyi", "gateway_pb2_grpc.pyi")


def test_generated_stubs_match_the_proto(tmp_path: Path) -> None:
    plugins = str(Path(sys.executable).parent)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", f"--mypy_out={tmp_path}", f"--mypy_grpc_out={tmp_path}",
         "protos/cancellation/v1/gateway.proto"],
        cwd=ROOT, check=True, env={**os.environ, "PATH": f"{plugins}:{os.environ['PATH']}"},
    )  # fmt: skip
    for name in GENERATED:
        fresh = (tmp_path / "cancellation" / "v1" / name).read_text()
        assert fresh == (ROOT / "cancellation" / "v1" / name).read_text(), (
            f"{name} is stale: make proto"
        )


def _fields(message: Descriptor) -> dict[str, int]:
    return {field.name: field.number for field in message.fields}


def _values(enum: EnumDescriptor) -> dict[str, int]:
    return {value.name: value.number for value in enum.values}


# Other teams generate clients from this contract: these numbers may never change.
FIXED_FIELDS = {
    "CancelJobRequest": {"kiiex_user_report": 1, "kiiex_quote": 2, "zuora_report_run": 3,
                         "idempotency_key": 10, "wait_for_confirmation": 11, "connection": 12},
    "KiiexUserReport": {"user_report_id": 1},
    "KiiexQuote": {"oms_id": 1, "account_id": 2, "instrument_id": 3, "bid_quote_id": 4,
                   "ask_quote_id": 5},
    "ZuoraReportRun": {"report_run_id": 1},
    "LegResult": {"leg": 1, "outcome": 2, "reason": 3, "retryable": 4, "upstream_code": 5,
                  "upstream_message": 6, "detail": 7},
    "CancelJobResponse": {"outcome": 1, "reason": 2, "retryable": 3, "message": 4, "upstream": 5,
                          "operation": 6, "legs": 7, "attempts": 8, "upstream_latency": 9,
                          "replayed": 10, "request_id": 11, "upstream_response": 12,
                          "retry_after": 13, "attempt_history": 14},
    "Attempt": {"number": 1, "delivery": 2, "legs": 3, "latency": 4, "request_id": 5},
}  # fmt: skip


@pytest.mark.parametrize("message", sorted(FIXED_FIELDS))
def test_contract_fields_keep_their_names_and_numbers(message: str) -> None:
    fields = _fields(gateway_pb2.DESCRIPTOR.message_types_by_name[message])
    assert FIXED_FIELDS[message].items() <= fields.items()


def test_contract_enums_keep_their_values() -> None:
    outcomes = _values(gateway_pb2.DESCRIPTOR.enum_types_by_name["Outcome"])
    reasons = _values(gateway_pb2.DESCRIPTOR.enum_types_by_name["Reason"])
    assert list(outcomes.values()) == list(range(8))
    assert list(reasons.values()) == list(range(13))
    assert outcomes["OUTCOME_PARTIAL"] == 4
    assert outcomes["OUTCOME_UNKNOWN"] == 6
    assert outcomes["OUTCOME_VALIDATED"] == 7
    assert reasons["REASON_NOT_CONFIRMED"] == 11
    assert reasons["REASON_CONNECTION_MISCONFIGURED"] == 12
    deliveries = _values(gateway_pb2.DESCRIPTOR.enum_types_by_name["Delivery"])
    assert deliveries == {"DELIVERY_UNSPECIFIED": 0, "DELIVERY_ANSWERED": 1,
                          "DELIVERY_NO_ANSWER": 2, "DELIVERY_NOT_SENT": 3}  # fmt: skip


def test_model_enums_mirror_the_proto() -> None:
    from gateway.model import Delivery, Outcome, Reason

    assert {f"OUTCOME_{o.name}": o.value for o in Outcome} == _values(
        gateway_pb2.Outcome.DESCRIPTOR
    )
    assert {f"REASON_{r.name}": r.value for r in Reason} == _values(gateway_pb2.Reason.DESCRIPTOR)
    assert {f"DELIVERY_{d.name}": d.value for d in Delivery} == _values(
        gateway_pb2.Delivery.DESCRIPTOR
    )
