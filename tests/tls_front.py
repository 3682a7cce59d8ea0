"""A TLS front for a loopback upstream, as an ingress terminates TLS before an API: it
accepts TLS on a free loopback port (its certificate, and optionally a CA whose client
certificates it requires) and forwards the plaintext to the upstream.

A handshake it refuses is drained, not cut: under TLS 1.3 the client finishes its side of
the handshake before the server judges its certificate, so the server's alert arrives after
the client has written; a server that closed at once would make that look like a reset."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

DRAIN_SECONDS = 2.0


class TlsFront:
    def __init__(
        self,
        target_port: int,
        *,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path | None = None,
        maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    ) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.maximum_version = maximum
        context.load_cert_chain(cert_file, key_file)
        if client_ca_file is not None:
            context.load_verify_locations(client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        self._context, self._target = context, target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.refused = 0
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closing = threading.Event()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def __enter__(self) -> TlsFront:
        self._start(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        for sock in (self._listener, *self._sockets):  # wakes the threads blocked on them
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=DRAIN_SECONDS + 1)

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._sockets.append(raw)
            self._start(self._serve, raw)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(DRAIN_SECONDS)
        tls = self._context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError):
            self.refused += 1
            # wrap_socket took the file descriptor over (`raw` is detached now): drain it
            # as a plain socket, or the SSL object's end would close it under the alert.
            drained = socket.socket(fileno=tls.detach())
            drained.settimeout(DRAIN_SECONDS)
            self._sockets.append(drained)
            _drain(drained)
            return
        with contextlib.closing(tls), socket.create_connection(("127.0.0.1", self._target)) as up:
            self._sockets.append(up)
            self._start(_copy, up, tls)
            _copy(tls, up)


def _drain(raw: socket.socket) -> None:
    """Reads until the client closes (or a bound passes), so the alert reaches it."""
    with contextlib.closing(raw), contextlib.suppress(OSError):
        while raw.recv(65536):
            pass


def _copy(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tls_front(target_port: int, **options: object) -> Iterator[TlsFront]:
    with TlsFront(target_port, **options) as front:  # type: ignore[arg-type]
        yield front
