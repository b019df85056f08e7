"""Ollama-native test upstream: a small aiohttp server with Ollama's API and canned replies.

It implements the routes that LiteLLM's ``ollama_chat/`` and ``ollama/`` providers and
Ollama clients use: ``GET /api/version``, ``GET /api/tags``, ``POST /api/show``,
``POST /api/chat``, ``POST /api/generate``, ``POST /api/embed`` and the older
``POST /api/embeddings``. Chat and generate stream NDJSON unless the body has
``"stream": false``, as Ollama does, and end with Ollama's final object (``done``,
``done_reason``, ``eval_count`` and the durations in nanoseconds).

Replies are deterministic so tests can assert on them: chat and generate reply
``REPLY_PREFIX`` followed by the last user message (or prompt), streamed one word per chunk.
Embeddings are ``EMBEDDING_DIMENSION`` floats derived from a SHA-256 hash of the text. An
unknown model gets Ollama's 404 ``{"error": "model \\"NAME\\" not found, try pulling it
first"}``.

Every request to ``/api/`` is recorded with its method, path, query, headers and body.
``GET /_test/requests`` returns ``{"requests": [...]}`` and ``DELETE /_test/requests``
clears the list.

Run it from the repository root with ``python -m tests.upstreams.ollama --port N``. It
imports only aiohttp and the standard library, so ``python tests/upstreams/ollama.py --port
N`` works from anywhere too.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import struct
import time
from datetime import datetime, timezone
from typing import Any

from aiohttp import web


OLLAMA_VERSION = "0.5.7"
REPLY_PREFIX = "Echo: "
EMBEDDING_DIMENSION = 16
# Pause between streamed chunks, so clients see them arrive separately.
CHUNK_INTERVAL_SECONDS = 0.005
MODELS: dict[str, dict[str, Any]] = {
    "qwen2.5:3b": {"family": "qwen2", "parameter_size": "3.1B", "context_length": 32768},
    "qwen2.5-coder:7b": {"family": "qwen2", "parameter_size": "7.6B", "context_length": 32768},
    "nomic-embed-text": {
        "family": "nomic-bert",
        "parameter_size": "137M",
        "context_length": 2048,
    },
}
EMBEDDING_MODELS = frozenset({"nomic-embed-text"})

RECORDS_KEY = web.AppKey("records", list)


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def normalize_model_name(name: str) -> str:
    """Return the model name with Ollama's implicit ``:latest`` tag removed."""
    return name.removesuffix(":latest")


def model_details(name: str) -> dict[str, Any]:
    model = MODELS[name]
    return {
        "parent_model": "",
        "format": "gguf",
        "family": model["family"],
        "families": [model["family"]],
        "parameter_size": model["parameter_size"],
        "quantization_level": "Q4_K_M",
    }


def model_digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def embed_text(text: str) -> list[float]:
    """Return a deterministic unit-length vector of ``EMBEDDING_DIMENSION`` floats for ``text``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    # Each value takes two bytes, so digests are chained until there are enough bytes.
    while len(digest) < 2 * EMBEDDING_DIMENSION:
        digest += hashlib.sha256(digest).digest()
    integers = struct.unpack(f"<{EMBEDDING_DIMENSION}H", digest[: 2 * EMBEDDING_DIMENSION])
    values = [integer / 32767.5 - 1.0 for integer in integers]
    norm = sum(value * value for value in values) ** 0.5 or 1.0
    return [value / norm for value in values]


def count_tokens(text: str) -> int:
    """Return a rough token count (whitespace-separated words) for the usage fields."""
    return max(1, len(text.split()))


def split_into_chunks(text: str) -> list[str]:
    """Split ``text`` into one chunk per word, each keeping the whitespace before it."""
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


def message_text(message: dict[str, Any]) -> str:
    """Return a chat message's text, whether its content is a string or a list of parts."""
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def model_not_found(name: str) -> web.Response:
    return error_response(404, f'model "{name}" not found, try pulling it first')


async def read_json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """Return the request body as a JSON object, or Ollama's 400 error response."""
    try:
        body = await request.json()
    except json.JSONDecodeError as error:
        return error_response(400, f"invalid JSON body: {error}")
    if not isinstance(body, dict):
        return error_response(400, "invalid JSON body: expected an object")
    return body


def requested_model(body: dict[str, Any]) -> str:
    """Return the model that an Ollama request names (``model``, or the older ``name``)."""
    return normalize_model_name(str(body.get("model") or body.get("name") or ""))


def timing_fields(prompt_text: str, reply_text: str, started: float) -> dict[str, Any]:
    total_nanoseconds = int((time.monotonic() - started) * 1e9)
    return {
        "total_duration": total_nanoseconds,
        "load_duration": 0,
        "prompt_eval_count": count_tokens(prompt_text),
        "prompt_eval_duration": total_nanoseconds // 2,
        "eval_count": count_tokens(reply_text),
        "eval_duration": total_nanoseconds - total_nanoseconds // 2,
    }


@web.middleware
async def record_requests(request: web.Request, handler):
    """Record each ``/api/`` request before it is handled."""
    if request.path.startswith("/api/"):
        raw_body = await request.read()
        try:
            body: Any = json.loads(raw_body) if raw_body else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = raw_body.decode("utf-8", errors="replace")
        request.app[RECORDS_KEY].append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
            }
        )
    return await handler(request)


async def get_version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_VERSION})


async def get_tags(request: web.Request) -> web.Response:
    models = [
        {
            "name": name,
            "model": name,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 1_000_000,
            "digest": model_digest(name),
            "details": model_details(name),
        }
        for name in MODELS
    ]
    return web.json_response({"models": models})


async def post_show(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    name = requested_model(body)
    if name not in MODELS:
        return model_not_found(name)
    details = model_details(name)
    family = details["family"]
    capabilities = ["embedding"] if name in EMBEDDING_MODELS else ["completion", "tools"]
    return web.json_response(
        {
            "license": "",
            "modelfile": f"FROM {name}\n",
            "parameters": "",
            # LiteLLM reads tool support from the word "tools" in the template.
            "template": "{{ if .Tools }}tools{{ end }}{{ .Prompt }}",
            "details": details,
            "model_info": {
                "general.architecture": family,
                f"{family}.context_length": MODELS[name]["context_length"],
            },
            "capabilities": capabilities,
            "modified_at": "2025-01-01T00:00:00Z",
        }
    )


async def stream_ndjson(
    request: web.Request, chunks: list[dict[str, Any]], final: dict[str, Any]
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(json.dumps(chunk).encode("utf-8") + b"\n")
        await asyncio.sleep(CHUNK_INTERVAL_SECONDS)
    await response.write(json.dumps(final).encode("utf-8") + b"\n")
    await response.write_eof()
    return response


async def post_chat(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    name = requested_model(body)
    if name not in MODELS:
        return model_not_found(name)
    if name in EMBEDDING_MODELS:
        return error_response(400, f'"{name}" does not support chat')
    messages = body.get("messages")
    if not isinstance(messages, list):
        return error_response(400, "invalid request: messages must be a list")

    user_messages = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last_user_text = message_text(user_messages[-1]) if user_messages else ""
    reply = REPLY_PREFIX + last_user_text
    prompt_text = " ".join(message_text(m) for m in messages if isinstance(m, dict))
    timings = timing_fields(prompt_text, reply, started)

    if body.get("stream", True):
        chunks = [
            {
                "model": name,
                "created_at": now_rfc3339(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            for piece in split_into_chunks(reply)
        ]
        final = {
            "model": name,
            "created_at": now_rfc3339(),
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            **timings,
        }
        return await stream_ndjson(request, chunks, final)
    return web.json_response(
        {
            "model": name,
            "created_at": now_rfc3339(),
            "message": {"role": "assistant", "content": reply},
            "done_reason": "stop",
            "done": True,
            **timings,
        }
    )


async def post_generate(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    name = requested_model(body)
    if name not in MODELS:
        return model_not_found(name)
    if name in EMBEDDING_MODELS:
        return error_response(400, f'"{name}" does not support generate')
    prompt = str(body.get("prompt") or "")
    reply = REPLY_PREFIX + prompt
    timings = timing_fields(prompt, reply, started)
    # Ollama returns the conversation's token ids as "context". These are placeholders, one
    # per word of prompt and reply.
    context = list(range(timings["prompt_eval_count"] + timings["eval_count"]))

    if body.get("stream", True):
        chunks = [
            {"model": name, "created_at": now_rfc3339(), "response": piece, "done": False}
            for piece in split_into_chunks(reply)
        ]
        final = {
            "model": name,
            "created_at": now_rfc3339(),
            "response": "",
            "done": True,
            "done_reason": "stop",
            "context": context,
            **timings,
        }
        return await stream_ndjson(request, chunks, final)
    return web.json_response(
        {
            "model": name,
            "created_at": now_rfc3339(),
            "response": reply,
            "done": True,
            "done_reason": "stop",
            "context": context,
            **timings,
        }
    )


async def post_embed(request: web.Request) -> web.Response:
    started = time.monotonic()
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    name = requested_model(body)
    if name not in MODELS:
        return model_not_found(name)
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(text, str) for text in inputs):
        return error_response(400, "invalid input type: input must be a string or a list of strings")
    return web.json_response(
        {
            "model": name,
            "embeddings": [embed_text(text) for text in inputs],
            "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": sum(count_tokens(text) for text in inputs),
        }
    )


async def post_embeddings(request: web.Request) -> web.Response:
    """Serve the older ``/api/embeddings`` route: one ``prompt`` in, one ``embedding`` out."""
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    name = requested_model(body)
    if name not in MODELS:
        return model_not_found(name)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return error_response(400, "invalid request: prompt must be a string")
    return web.json_response({"embedding": embed_text(prompt)})


async def get_root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def get_recorded_requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[RECORDS_KEY]})


async def delete_recorded_requests(request: web.Request) -> web.Response:
    request.app[RECORDS_KEY].clear()
    return web.Response(status=204)


def create_app() -> web.Application:
    app = web.Application(middlewares=[record_requests])
    app[RECORDS_KEY] = []
    app.router.add_get("/", get_root)
    app.router.add_get("/api/version", get_version)
    app.router.add_get("/api/tags", get_tags)
    app.router.add_post("/api/show", post_show)
    app.router.add_post("/api/chat", post_chat)
    app.router.add_post("/api/generate", post_generate)
    app.router.add_post("/api/embed", post_embed)
    app.router.add_post("/api/embeddings", post_embeddings)
    app.router.add_get("/_test/requests", get_recorded_requests)
    app.router.add_delete("/_test/requests", delete_recorded_requests)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Ollama-native test upstream.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    web.run_app(create_app(), host=arguments.host, port=arguments.port, print=None)


if __name__ == "__main__":
    main()
