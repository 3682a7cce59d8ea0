"""A cheap upstream for `make bench`: raw asyncio HTTP/1.1 with keep-alive, speaking just
enough KIIEX and Zuora to log in and cancel, so the figures measure the gateway and not a
simulator. Run as `python -m benchmarks.upstream PORT` (its own process); prints `ready`.

Every cancel succeeds: KIIEX answers the generic envelope with errorcode 0, Zuora "The
report run has been canceled".
"""

from __future__ import annotations

import asyncio
import json
import sys

_LOGIN = json.dumps(
    {"Authenticated": True, "SessionToken": "bench-session", "User": {"UserId": 1, "AccountId": 7}}
).encode()
_TOKEN = json.dumps({"access_token": "bench-token", "expires_in": 3600}).encode()
_KIIEX = json.dumps({"result": True, "errormsg": None, "errorcode": 0, "detail": None}).encode()
_ZUORA = json.dumps({"success": True, "response": "The report run has been canceled"}).encode()
_QUOTE = json.dumps({"BidResult": json.loads(_KIIEX), "AskResult": json.loads(_KIIEX)}).encode()


def _body_for(method: bytes, path: bytes) -> bytes:
    if path.endswith(b"/AuthenticateUser"):
        return _LOGIN
    if path.endswith(b"/oauth/token"):
        return _TOKEN
    if path.endswith(b"/CancelQuote"):
        return _QUOTE
    if method == b"DELETE":
        return _ZUORA
    return _KIIEX


def _response(body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.split(b"\r\n")
            method, path, _ = request_line.split(b" ", 2)
            length = 0
            for line in lines:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            writer.write(_response(_body_for(method, path)))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the upstream is not what is measured
        pass
    asyncio.run(main(int(sys.argv[1])))
