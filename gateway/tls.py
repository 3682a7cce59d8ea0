"""The gRPC port's certificate files, checked when the configuration is read: a pair that
does not load, or a CA bundle that is no PEM, is refused naming its key."""

from __future__ import annotations

import ssl
from pathlib import Path

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
