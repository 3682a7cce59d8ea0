"""How a connection leaves: directly, or through an HTTP proxy (a CONNECT tunnel for HTTPS,
TLS end to end). Decided once, when the configuration is read, from the connection's
`proxy` key or, without one, from the environment as curl reads it.

curl's rules, which platform teams already set for every other tool: `https_proxy` (or
`HTTPS_PROXY`) for an https URL, `http_proxy` for an http one (never `HTTP_PROXY`: a CGI
request header can set that name), then `all_proxy` / `ALL_PROXY`; `no_proxy` / `NO_PROXY`
lists hosts that go direct (`*` for all, a domain for it and its subdomains, an IP address
or CIDR range). Loopback gets no exception unless `no_proxy` names it. A proxy without a
port is on 1080, as curl has it. Only http:// proxies: the CONNECT goes in plain HTTP
(TLS to the upstream stays end to end inside the tunnel).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

DIRECT = "none"
_CURL_PROXY_PORT = 1080


@dataclass(frozen=True)
class Egress:
    proxy: str = ""
    """The proxy's URL, without credentials; "" for a direct connection."""
    credentials: str = field(default="", repr=False)
    """`user:password` for Proxy-Authorization: Basic; "" for none."""
    source: str = ""
    """Where the proxy came from: the `proxy` key, or the environment variable's name."""

    def describe(self) -> str:
        """One start-up line's worth: how the connection leaves (never its credentials)."""
        if not self.proxy:
            return "direct"
        parts = urlsplit(self.proxy)
        auth = ", with credentials" if self.credentials else ""
        return f"proxy {parts.hostname}:{parts.port} (from {self.source}{auth})"


class EgressError(ValueError):
    """A proxy setting that cannot be used; the message never quotes a credential."""


def egress_of(
    base_url: str, proxy: str | None, credentials: str, environ: Mapping[str, str]
) -> Egress:
    """How a connection to `base_url` leaves, from its `proxy` key (None: the environment;
    "none": direct) and its proxy credentials."""
    if proxy is not None and proxy.strip().lower() == DIRECT:
        return Egress()
    if proxy is not None:
        url, embedded = _split(proxy, "proxy")
        if embedded:
            raise EgressError("carries credentials: give them in proxy_credentials_env or _file")
        return Egress(url, _sendable(credentials, "proxy_credentials"), "the proxy key")
    return _from_environment(base_url, credentials, environ)


def _from_environment(base_url: str, credentials: str, environ: Mapping[str, str]) -> Egress:
    parts = urlsplit(base_url)
    if _bypassed(parts.hostname or "", _first(environ, "no_proxy", "NO_PROXY")[1]):
        return Egress()
    names = ("https_proxy", "HTTPS_PROXY") if parts.scheme == "https" else ("http_proxy",)
    name, value = _first(environ, *names, "all_proxy", "ALL_PROXY")
    if not value:
        return Egress()
    url, embedded = _split(value, name)
    return Egress(url, _sendable(credentials or embedded, name), name)


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str]:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return "", ""


def _split(value: str, name: str) -> tuple[str, str]:
    """(the proxy URL without user info, `user:password` it carried); curl's default
    scheme is http://, its default port 1080."""
    url = value if "://" in value else f"http://{value}"
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise EgressError(f"{name}: not an http:// proxy URL")
    try:
        port = parts.port or _CURL_PROXY_PORT
    except ValueError:
        raise EgressError(f"{name}: not an http:// proxy URL") from None
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    embedded = ""
    if parts.username is not None:
        user = unquote(parts.username)
        if ":" in user:  # Basic authentication cannot carry it (RFC 7617)
            raise EgressError(f"{name}: the proxy user may not contain ':'")
        embedded = f"{user}:{unquote(parts.password or '')}"
    return f"http://{netloc}:{port}", embedded


def _sendable(credentials: str, name: str) -> str:
    """Proxy-Authorization carries Latin-1 (as aiohttp encodes Basic credentials)."""
    try:
        credentials.encode("latin-1")
    except UnicodeEncodeError:
        raise EgressError(f"{name}: the proxy credentials must be Latin-1 text") from None
    return credentials


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.lower().strip("[]").rstrip(".")
    address = _address(host)
    for entry in (item.strip().lower().rstrip(".") for item in no_proxy.split(",")):
        entry = entry.lstrip(".")
        if not entry:
            continue
        if entry == "*" or host == entry:
            return True
        if address is not None:  # an address matches only itself or a range holding it
            if _in_network(address, entry):
                return True
        elif host.endswith(f".{entry}"):
            return True
    return False


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _in_network(address: ipaddress.IPv4Address | ipaddress.IPv6Address, entry: str) -> bool:
    try:
        return address in ipaddress.ip_network(entry, strict=False)
    except ValueError:  # not a network
        return False
