"""A raw TCP test upstream that breaks HTTP in ways aiohttp.web cannot.

`FaultyUpstream` listens on 127.0.0.1 and reads each request itself, so it can
reset the connection before the status line, never send headers, send headers
of any size, or promise a ``Content-Length`` it does not deliver. A test sets
`FaultyUpstream.fault` to one of `FAULTS` before sending a request; ``"ok"``
answers a normal JSON document with keep-alive, so the same connection pool
can be used before and after a fault.

Every request is recorded (method, path, headers) in `FaultyUpstream.requests`,
and `FaultyUpstream.open_connections` counts the connections not yet closed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass, field

# What the upstream does with the next requests; see `FaultyUpstream._answer`.
FAULTS = (
    "ok",
    "reset_before_headers",
    "close_before_headers",
    "no_headers",
    "partial_headers",
    "huge_headers",
    "truncated_body",
    "stalled_body",
    "reset_mid_body",
    "truncated_large_body",
    "reset_mid_stream",
    "stalled_stream",
    "truncated_json_error",
)

OK_BODY = json.dumps({"object": "list", "data": [{"id": "qwen2.5:3b"}]}).encode()
# A chat completion cut off in the middle, as a proxy or gateway that crashed
# while writing would leave it.
TRUNCATED_JSON = b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "Hel'
STREAM_EVENT = b'data: {"choices": [{"delta": {"content": "part"}}]}\n\n'
# Size in bytes that the "truncated_large_body" fault promises.
LARGE_BODY_SIZE = 4 * 1024 * 1024


@dataclass
class FaultyRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FaultyUpstream:
    """The raw test upstream; `url` ends in ``/v1``."""

    fault: str = "ok"
    # Size in bytes of the one header sent by the "huge_headers" fault.
    huge_header_size: int = 1024 * 1024
    requests: list[FaultyRequest] = field(default_factory=list)
    open_connections: int = 0
    url: str = ""
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task] = field(default_factory=set)

    async def start(self) -> FaultyUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------ connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        self._handlers.add(task)
        self.open_connections += 1
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.open_connections -= 1
            self._handlers.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _serve_one(self, reader, writer) -> bool:
        """Read one request and answer it; return whether to keep the connection."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _version = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
        length = int(headers.get("Content-Length", "0"))
        if length:
            await reader.readexactly(length)
        self.requests.append(FaultyRequest(method, path, headers))
        return await self._answer(self.fault, reader, writer)

    async def _answer(self, fault: str, reader, writer) -> bool:
        if fault == "ok":
            writer.write(_head(200, "application/json", len(OK_BODY)) + OK_BODY)
            await writer.drain()
            return True
        if fault == "reset_before_headers":
            _reset(writer)
            return False
        if fault == "close_before_headers":
            writer.close()
            return False
        if fault == "no_headers":
            await _wait_for_close(reader)
            return False
        if fault == "partial_headers":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            await writer.drain()
            await _wait_for_close(reader)
            return False
        if fault == "huge_headers":
            writer.write(
                b"HTTP/1.1 200 OK\r\nX-Huge: "
                + b"a" * self.huge_header_size
                + b"\r\n"
                + b"Content-Length: 2\r\n\r\n{}"
            )
            await writer.drain()
            return False
        if fault in ("truncated_body", "stalled_body", "reset_mid_body"):
            # The status line promises twice the bytes that are sent.
            writer.write(_head(200, "application/json", 2 * len(TRUNCATED_JSON)))
            writer.write(TRUNCATED_JSON)
            await writer.drain()
            if fault == "stalled_body":
                await _wait_for_close(reader)
            elif fault == "reset_mid_body":
                _reset(writer)
            else:
                writer.close()
            return False
        if fault == "truncated_large_body":
            # 2 MiB of a promised 4 MiB, more than the proxy keeps before it
            # starts passing the body on. A reset could discard data the proxy
            # has not read yet, so the connection ends with a FIN.
            writer.write(_head(200, "application/json", LARGE_BODY_SIZE))
            writer.write(b" " * (LARGE_BODY_SIZE // 2))
            await writer.drain()
            writer.close()
            return False
        if fault in ("reset_mid_stream", "stalled_stream"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(2):
                writer.write(_chunk(STREAM_EVENT))
            # Half an event, which the proxy must not pass on.
            writer.write(_chunk(b'data: {"choi'))
            await writer.drain()
            if fault == "stalled_stream":
                await _wait_for_close(reader)
            else:
                _reset(writer)
            return False
        if fault == "truncated_json_error":
            writer.write(_head(500, "application/json", len(TRUNCATED_JSON)) + TRUNCATED_JSON)
            await writer.drain()
            return True
        raise ValueError(f"unknown fault {fault!r}; use one of {', '.join(FAULTS)}")


def _head(status: int, content_type: str, length: int) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _wait_for_close(reader: asyncio.StreamReader) -> None:
    """Send nothing more until the client closes its side."""
    while await reader.read(65536):
        pass
