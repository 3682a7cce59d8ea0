"""How a connection leaves, decided from its `proxy` key or the environment as curl reads
it; credentials never in a message."""

from __future__ import annotations

import pytest

from gateway.egress import Egress, EgressError, egress_of

HTTPS = "https://api.upstream.example"


@pytest.mark.parametrize(
    ("url", "environ", "proxy", "source"),
    [
        (HTTPS, {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128", "HTTPS_PROXY"),
        (HTTPS, {"https_proxy": "p:3128", "HTTPS_PROXY": "http://q:1"}, "http://p:3128",
         "https_proxy"),
        (HTTPS, {"ALL_PROXY": "http://all:8080"}, "http://all:8080", "ALL_PROXY"),
        ("http://127.0.0.1:80", {"http_proxy": "http://p:3128"}, "http://p:3128", "http_proxy"),
        # curl never reads HTTP_PROXY (a CGI request header can set that name)
        ("http://127.0.0.1:80", {"HTTP_PROXY": "http://p:3128"}, "", ""),
        # an https URL does not use http_proxy
        (HTTPS, {"http_proxy": "http://p:3128"}, "", ""),
        # loopback has no exception of its own
        ("https://127.0.0.1:8443", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128",
         "HTTPS_PROXY"),
    ],
)  # fmt: skip
def test_the_environments_proxy_as_curl_reads_it(
    url: str, environ: dict[str, str], proxy: str, source: str
) -> None:
    egress = egress_of(url, None, "", environ)
    assert (egress.proxy, egress.source) == (proxy, source)


@pytest.mark.parametrize(
    ("no_proxy", "bypassed"),
    [("*", True), ("upstream.example", True), (".upstream.example", True),
     ("api.upstream.example", True), ("other.example, upstream.example", True),
     ("stream.example", False), ("example.org", False), ("", False)],
)  # fmt: skip
def test_no_proxy_names_hosts_and_their_subdomains(no_proxy: str, bypassed: bool) -> None:
    environ = {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": no_proxy}
    assert (egress_of(HTTPS, None, "", environ).proxy == "") is bypassed


def test_no_proxy_takes_addresses_and_ranges() -> None:
    environ = {"HTTPS_PROXY": "http://p:3128", "no_proxy": "10.0.0.0/8,::1"}
    assert egress_of("https://10.2.3.4", None, "", environ) == Egress()
    assert egress_of("https://[::1]:443", None, "", environ) == Egress()
    assert egress_of("https://11.0.0.1", None, "", environ).proxy == "http://p:3128"


def test_the_key_wins_over_the_environment_and_none_is_direct() -> None:
    environ = {"HTTPS_PROXY": "http://env:1"}
    assert egress_of(HTTPS, "none", "", environ) == Egress()
    keyed = egress_of(HTTPS, "http://key:3128", "u:p", environ)
    assert (keyed.proxy, keyed.credentials, keyed.source) == (
        "http://key:3128",
        "u:p",
        "the proxy key",
    )


def test_credentials_in_the_environments_url_are_used_and_never_shown() -> None:
    egress = egress_of(HTTPS, None, "", {"HTTPS_PROXY": "http://us%40er:p%3Ass@p:3128"})
    assert (egress.proxy, egress.credentials) == ("http://p:3128", "us@er:p:ss")
    assert "p:ss" not in repr(egress)
    assert egress.describe() == "proxy p:3128 (from HTTPS_PROXY, with credentials)"


@pytest.mark.parametrize("bad", ["ftp://p:21", "http://", "http://p:notaport"])
def test_an_unusable_proxy_is_refused(bad: str) -> None:
    with pytest.raises(EgressError):
        egress_of(HTTPS, bad, "", {})


def test_curls_defaults_and_refusals() -> None:
    assert egress_of(HTTPS, "http://p", "", {}).proxy == "http://p:1080"  # curl's port
    assert egress_of(HTTPS, "NONE", "", {"HTTPS_PROXY": "http://p:1"}) == Egress()
    for refused in ("https://p:3128", "socks5://p:1080"):
        with pytest.raises(EgressError, match="not an http:// proxy URL"):
            egress_of(HTTPS, refused, "", {})
    with pytest.raises(EgressError, match="may not contain ':'"):
        egress_of(HTTPS, None, "", {"HTTPS_PROXY": "http://us%3Aer:pw@p:3128"})
    with pytest.raises(EgressError, match="Latin-1"):
        egress_of(HTTPS, "http://p:3128", "user:pass€", {})


def test_no_proxy_matches_an_address_only_exactly_or_by_range_and_ignores_trailing_dots() -> None:
    environ = {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "0.1,upstream.example."}
    assert egress_of("https://10.0.0.1", None, "", environ).proxy == "http://p:3128"
    assert egress_of("https://api.upstream.example.", None, "", environ) == Egress()
