"""Certificate files, checked when the configuration is read: the gRPC port's pair and
client CA, and each connection's CA bundle and client certificate. A pair that does not
load, a CA bundle that is no PEM, or a client certificate that has expired is refused,
naming its key."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import certifi

from gateway.schema import invalid


def read(key: str, path: str) -> bytes:
    """A file a key names, or the error naming the key."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise invalid(key, f"cannot read {path}: {error.strerror}") from error
    except ValueError as error:  # a NUL in the path
        raise invalid(key, f"cannot read {path!r}: {error}") from error


def check_pair(cert_file: str, key_file: str) -> None:
    """The certificate and key load, and belong together."""
    read("cert_file", cert_file)
    read("key_file", key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, ValueError) as error:
        raise invalid(
            "cert_file",
            f"the certificate and key do not load as a pair ({error.__class__.__name__})",
        ) from error


def check_ca_bundle(key: str, path: str) -> None:
    pem = read(key, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=pem.decode("ascii", "replace")
        )
    except (ssl.SSLError, ValueError) as error:
        raise invalid(key, "not a PEM CA bundle") from error


@dataclass(frozen=True)
class ClientCertificate:
    """What a connection's client certificate says of itself (for logs, metrics, checks)."""

    subject: str
    expires: float
    """notAfter, in seconds since the epoch."""


def check_client_pair(cert_file: str, key_file: str) -> ClientCertificate:
    """A client certificate and key that load together and have not expired."""
    read("client_cert_file", cert_file)
    if b"ENCRYPTED" in read("client_key_file", key_file):
        raise invalid("client_key_file", "the key is encrypted: give it without a passphrase")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except (ssl.SSLError, ValueError) as error:
        raise invalid(
            "client_cert_file",
            f"the certificate and key do not load as a pair ({error.__class__.__name__})",
        ) from error
    seen = _decoded(cert_file)
    expires = ssl.cert_time_to_seconds(str(seen["notAfter"]))
    subject = _name(seen.get("subject", ()))
    if expires <= time.time():
        raise invalid("client_cert_file", f"the certificate of {subject} expired")
    if ssl.cert_time_to_seconds(str(seen["notBefore"])) > time.time():
        raise invalid("client_cert_file", f"the certificate of {subject} is not valid yet")
    return ClientCertificate(subject, expires)


def _no_passphrase() -> str:
    """Answers OpenSSL's passphrase question, so that it never asks a terminal."""
    return ""


def _decoded(cert_file: str) -> dict[str, object]:
    """The first certificate of a PEM file, as the ssl module describes a peer's. Python has
    no public parser; this is the one its own tests use, stable since Python 3.0."""
    decode = ssl._ssl._test_decode_cert  # type: ignore[attr-defined]
    decoded: dict[str, object] = decode(cert_file)
    return decoded


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


def _name(subject: object) -> str:
    """`CN=gateway, O=Example` from the ssl module's nested tuples."""
    rdns = subject if isinstance(subject, tuple) else ()
    return ", ".join(f"{_SHORT.get(key, key)}={value}" for rdn in rdns for key, value in rdn)


def client_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """A connection's TLS context: its `ca_file` alone instead of the default roots, and its
    client certificate for mutual TLS; None (the HTTP engine's default) without both."""
    if not ca_file and not cert_file:
        return None
    context = ssl.create_default_context(cafile=ca_file or certifi.where())
    if cert_file:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    return context
