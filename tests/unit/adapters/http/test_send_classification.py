"""What a transport failure says of the request: a TLS alert is the client certificate's
refusal only when it is a certificate alert; any other, after the request may have been
read, is no proof that nothing was sent."""

from __future__ import annotations

import ssl

import aiohttp
import httpx2
import pytest

from adapters.http import MISCONFIGURED, UNREACHABLE
from adapters.http._send import _classified


def _alert(reason: str) -> httpx2.TransportError:
    refusal = ssl.SSLError(1, f"[SSL: {reason}] alert")
    refusal.reason = reason
    lost = aiohttp.ClientOSError(1, "connection lost")
    lost.__cause__ = refusal
    error = httpx2.ReadError("read failed")
    error.__cause__ = lost
    return error


@pytest.mark.parametrize(
    "reason", ["TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE",
               "TLSV1_ALERT_UNKNOWN_CA"],
)  # fmt: skip
def test_a_certificate_alert_is_the_configs_and_nothing_was_sent(reason: str) -> None:
    code, may_have_left, said = _classified(_alert(reason), 1.0)
    assert (code, may_have_left) == (MISCONFIGURED, False)
    assert said.startswith("the upstream refused the client certificate")


@pytest.mark.parametrize("reason", ["SSLV3_ALERT_BAD_RECORD_MAC", "TLSV1_ALERT_DECODE_ERROR"])
def test_any_other_alert_may_follow_a_request_that_was_read(reason: str) -> None:
    code, may_have_left, _ = _classified(_alert(reason), 1.0)
    assert (code, may_have_left) == (UNREACHABLE, True)
