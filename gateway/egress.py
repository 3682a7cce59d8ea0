"""How a connection leaves: directly, or through an HTTP proxy (a CONNECT tunnel for HTTPS,
TLS end to end). Decided once, when the configuration is read, from the connection's
`proxy` key or, without one, from the environment as curl reads it.

curl's rules, which platform teams already set for every other tool: `https_proxy` (or
`HTTPS_PROXY`) for an https URL, `http_proxy` for an http one (never `HTTP_PROXY`: a CGI
request header can set that name), then `all_proxy` / `ALL_PROXY`; `no_proxy` / `NO_PROXY`
lists hosts that go direct (`*` for all, a domain for it and its subdomains, an IP address
or CIDR range). Loopback gets no exception unless `no_proxy` names it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

DIRECT = "none"


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
        return f"proxy {parts.hostname}:{parts.port or 80} (from {self.source}{auth})"


class EgressError(ValueError):
    """A proxy setting that cannot be used; the message never quotes a credential."""


def egress_of(
    base_url: str, proxy: str | None, credentials: str, environ: Mapping[str, str]
) -> Egress:
    """How a connection to `base_url` leaves, from its `proxy` key (None: the environment;
    "none": direct) and its proxy credentials."""
    if proxy == DIRECT:
        return Egress()
    if proxy is not None:
        url, embedded = _split(proxy, "proxy")
        if embedded:
            raise EgressError("carries credentials: give them in proxy_credentials_env or _file")
        return Egress(url, credentials, "the proxy key")
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
    return Egress(url, credentials or embedded, name)


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str]:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return "", ""


def _split(value: str, name: str) -> tuple[str, str]:
    """(the proxy URL without user info, `user:password` it carried); curl's default
    scheme is http://."""
    url = value if "://" in value else f"http://{value}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressError(f"{name}: not an http(s) proxy URL")
    try:
        port = parts.port
    except ValueError:
        raise EgressError(f"{name}: not an http(s) proxy URL") from None
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    proxy = f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")
    embedded = ""
    if parts.username is not None:
        embedded = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return proxy, embedded


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        entry = entry.lstrip(".")
        if not entry:
            continue
        if entry == "*" or host == entry or host.endswith(f".{entry}"):
            return True
        if _in_network(host, entry):
            return True
    return False


def _in_network(host: str, entry: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:  # not an address, or not a network
        return False
