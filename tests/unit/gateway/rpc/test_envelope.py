"""`upstream_response`: the upstream's parsed body as a Struct, built without a JSON round
trip, whole when protobuf can carry it and cut to its text when not."""

from __future__ import annotations

import json

from google.protobuf import json_format

from gateway.model import CancelResult, JsonValue, Outcome, Reason
from gateway.rpc.envelope import response_to_proto


def _returned(body: JsonValue) -> object:
    result = CancelResult(
        Outcome.ACCEPTED, Reason.UNSPECIFIED, False, "", "kiiex", "CancelUserReport",
        upstream_response=body,
    )  # fmt: skip
    response = response_to_proto(result)
    if not response.HasField("upstream_response"):
        return None
    return json_format.MessageToDict(response.upstream_response)


def test_an_object_comes_back_whole() -> None:
    body: JsonValue = {
        "result": True,
        "errorcode": 0,
        "detail": {"ids": [1, 2.5, "x"], "none": None},
    }
    assert _returned(body) == body


def test_anything_but_an_object_comes_back_under_body() -> None:
    assert _returned([1, "two"]) == {"body": [1, "two"]}
    assert _returned("TOO MANY REQUESTS") == {"body": "TOO MANY REQUESTS"}


def test_no_body_is_no_field() -> None:
    assert _returned(None) is None


def test_a_lone_surrogate_is_replaced_and_the_rest_kept() -> None:
    assert _returned({"errormsg": "bad \ud800 text", "errorcode": 5}) == {
        "errormsg": "bad ? text",
        "errorcode": 5,
    }


def test_a_number_past_a_double_turns_the_body_into_its_text() -> None:
    returned = _returned({"detail": 10**400})
    assert returned == {"truncated": True, "text": json.dumps({"detail": 10**400})[:2048]}


def test_a_body_past_64_kib_turns_into_its_first_2048_characters() -> None:
    body: JsonValue = {"detail": ["y" * 1000] * 100}
    returned = _returned(body)
    assert returned == {"truncated": True, "text": json.dumps(body, ensure_ascii=False)[:2048]}
