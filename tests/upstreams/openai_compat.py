"""An OpenAI-compatible test upstream with controllable behaviour and a request log.

`OpenAIUpstream` is a real aiohttp server on 127.0.0.1. It serves ``/v1/models``,
``/v1/models/{id}``, ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings`` with small canned answers, and answers every other path
with 200, so a test can see in `OpenAIUpstream.requests` whether the proxy
forwarded something it must not.

A request controls the answer through an ``x_test`` object in its JSON body
(the proxy forwards bodies unchanged):

- ``status`` and ``error``: answer with this status and this JSON ``error``;
  ``raw_body`` and ``content_type`` for a non-JSON answer (an HTML page);
- ``delay``: seconds to wait before sending the headers;
- ``chunks``, ``gap``: for ``"stream": true``, how many events and the seconds
  between them; ``forever``: keep streaming until the client goes away;
- ``fail_after``: close the connection after that many events;
- ``gzip``: compress the body (``Content-Encoding: gzip``) whatever the
  request's ``Accept-Encoding`` says;
- ``echo``: answer with the SHA-256 and length of the request body; on a
  stream, send them as the first event;
- ``padding`` and ``seed``: add ``padding`` characters of deterministic text
  (see `padding_text`) to the echo answer, or make each streamed event's
  content that long, so a client can check every byte it receives;
- ``set_cookie``, ``location``: send this value in a ``Set-Cookie`` or
  ``Location`` header.

Every request is recorded with its headers, body, client port, the number of
stream events written so far (``events_sent``), and the time the client's
connection was seen closing (``disconnected_at``), for cancellation and
back-pressure tests.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import random
import time
import zlib
from dataclasses import dataclass, field

from aiohttp import web

CHAT_MODELS = ["qwen2.5:3b", "qwen2.5-coder:7b"]
EMBEDDING_MODELS = ["nomic-embed-text"]


def padding_text(seed: str, index: int, size: int) -> str:
    """Return ``size`` hex characters determined by ``seed`` and ``index``."""
    return random.Random(f"{seed}:{index}").randbytes((size + 1) // 2).hex()[:size]


def echo_document(body: bytes, control: dict) -> dict:
    """Return the answer to an ``echo`` request whose raw body is ``body``."""
    document = {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    if control.get("padding"):
        document["padding"] = padding_text(control.get("seed", ""), 0, control["padding"])
    return document


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    client_port: int | None
    started_at: float
    disconnected_at: float | None = None
    finished_at: float | None = None
    events_sent: int = 0

    @property
    def json(self):
        return json.loads(self.body) if self.body else None


def _control_of(recorded: RecordedRequest) -> dict:
    """Return the ``x_test`` object of a request's JSON body, or an empty dict."""
    try:
        control = (recorded.json or {}).get("x_test")
    except (ValueError, AttributeError):
        return {}
    return control if isinstance(control, dict) else {}


@dataclass
class OpenAIUpstream:
    """The test upstream; `url` ends in ``/v1``."""

    expected_key: str | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    models: list[dict] | None = None
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> OpenAIUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def paths(self) -> list[str]:
        return [recorded.path for recorded in self.requests]

    # ------------------------------------------------------------------ routing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        recorded = RecordedRequest(
            method=request.method,
            path=request.raw_path.split("?", 1)[0],
            query=request.query_string,
            headers=dict(request.headers),
            body=body,
            client_port=peer[1] if peer else None,
            started_at=time.monotonic(),
        )
        self.requests.append(recorded)
        try:
            response = await self._answer(request, recorded)
            control = _control_of(recorded)
            for key, header in (("set_cookie", "Set-Cookie"), ("location", "Location")):
                if control.get(key) and not response.prepared:
                    response.headers[header] = control[key]
            return response
        finally:
            recorded.finished_at = time.monotonic()

    async def _answer(self, request: web.Request, recorded: RecordedRequest):
        if self.expected_key is not None:
            sent = request.headers.get("Authorization", "")
            if sent != f"Bearer {self.expected_key}":
                return web.json_response(
                    {"error": {"message": "Invalid API key", "type": "auth_error",
                               "code": "401"}},
                    status=401,
                )

        path = recorded.path
        if path == "/v1/models" and request.method == "GET":
            return web.json_response({"object": "list", "data": self._model_list()})
        if path.startswith("/v1/models/") and request.method == "GET":
            model_id = path[len("/v1/models/"):]
            known = {model["id"] for model in self._model_list()}
            if model_id not in known:
                return web.json_response(
                    {"error": {"message": f"model {model_id!r} not found",
                               "type": "invalid_request_error", "code": "model_not_found"}},
                    status=404,
                )
            return web.json_response({"id": model_id, "object": "model", "owned_by": "test"})
        if path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            return await self._answer_post(request, recorded)
        # Anything else (admin routes included) answers 200, so a test sees it
        # in the log if the proxy ever forwards it.
        return web.json_response({"unexpected_route": path})

    def _model_list(self) -> list[dict]:
        if self.models is not None:
            return self.models
        return [
            {"id": model_id, "object": "model", "owned_by": "test"}
            for model_id in CHAT_MODELS + EMBEDDING_MODELS
        ]

    async def _answer_post(self, request: web.Request, recorded: RecordedRequest):
        payload = recorded.json or {}
        control = payload.get("x_test") or {}

        if control.get("delay"):
            if await self._sleep_unless_gone(request, recorded, control["delay"]):
                return web.Response(status=499)

        if "status" in control:
            if "raw_body" in control:
                return web.Response(
                    status=control["status"],
                    body=control["raw_body"].encode(),
                    content_type=control.get("content_type", "text/html"),
                )
            return web.json_response(
                {"error": control.get("error", {"message": "test error"})},
                status=control["status"],
            )

        if payload.get("stream") is True and recorded.path != "/v1/embeddings":
            return await self._stream(request, recorded, payload, control)

        if control.get("echo"):
            return self._json(echo_document(recorded.body, control), control)

        if recorded.path == "/v1/embeddings":
            inputs = payload.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            return self._json(
                {"object": "list", "model": payload.get("model"),
                 "data": [{"object": "embedding", "index": i,
                           "embedding": [0.1 * i, 0.2, 0.3]} for i in range(count)]},
                control,
            )
        return self._json(self._completion(payload, recorded.path, "Hello from the test upstream."), control)

    def _json(self, document: dict, control: dict) -> web.Response:
        data = json.dumps(document).encode()
        if control.get("gzip"):
            return web.Response(
                body=gzip.compress(data),
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        return web.Response(body=data, content_type="application/json")

    @staticmethod
    def _completion(payload: dict, path: str, text: str) -> dict:
        if path == "/v1/completions":
            return {"id": "cmpl-test", "object": "text_completion", "model": payload.get("model"),
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
        return {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0,
            "model": payload.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    @staticmethod
    def chunk_event(index: int, model: str | None, content: str | None = None) -> bytes:
        if content is None:
            content = f"part{index} "
        chunk = {
            "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": content},
                         "finish_reason": None}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def _stream(self, request, recorded, payload, control) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        compressor = None
        if control.get("gzip"):
            response.headers["Content-Encoding"] = "gzip"
            compressor = zlib.compressobj(wbits=31)
        await response.prepare(request)

        chunks = control.get("chunks", 3)
        gap = control.get("gap", 0)
        forever = control.get("forever", False)
        fail_after = control.get("fail_after")
        index = 0
        padding = control.get("padding")
        try:
            if control.get("echo"):
                document = echo_document(recorded.body, {})
                await self._write(response, compressor, b"data: " + json.dumps(document).encode() + b"\n\n")
            while forever or index < chunks:
                if fail_after is not None and index >= fail_after:
                    # Send half an event, then drop the connection.
                    await self._write(response, compressor, b'data: {"choi')
                    request.transport.close()
                    return response
                content = padding_text(control.get("seed", ""), index, padding) if padding else None
                await self._write(response, compressor, self.chunk_event(index, payload.get("model"), content))
                index += 1
                recorded.events_sent = index
                if gap and (forever or index < chunks):
                    await asyncio.sleep(gap)
            await self._write(response, compressor, b"data: [DONE]\n\n")
            if compressor is not None:
                await response.write(compressor.flush())
            await response.write_eof()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            recorded.disconnected_at = time.monotonic()
            raise
        return response

    @staticmethod
    async def _write(response, compressor, data: bytes) -> None:
        if compressor is not None:
            data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        await response.write(data)

    @staticmethod
    async def _sleep_unless_gone(request, recorded, seconds: float) -> bool:
        """Sleep, watching the client's connection; return True if it closed."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                recorded.disconnected_at = time.monotonic()
                return True
            await asyncio.sleep(0.02)
        return False
