"""A fast OpenAI-compatible upstream for the benchmark, on 127.0.0.1.

``POST /v1/chat/completions`` returns:

- a small constant chat completion when the body has no ``"stream": true``;
- otherwise a server-sent event stream of ``max_tokens`` chunks (default 100),
  sent at full speed for the model ``fast`` and with ``--gap-ms`` milliseconds
  between chunks for the model ``gap``.

The content of chunk ``i`` is ``"<i>:<send time>"``, where the send time is
``time.monotonic()`` in seconds. ``CLOCK_MONOTONIC`` is shared by all processes
of a Linux machine, so the load client computes each chunk's one-way delay from
it. The chunks are valid OpenAI ``chat.completion.chunk`` objects, so LiteLLM
relays them.

Run: ``python -m benchmarks.upstream --port 8001 --gap-ms 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

CHAT_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "const",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "SELECT 1;"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }
).encode()

MODELS = json.dumps(
    {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "bench"}
            for name in ("const", "fast", "gap")
        ],
    }
).encode()

# A chunk is CHUNK_PREFIX + content + CHUNK_SUFFIX.
CHUNK_PREFIX = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",'
    b'"created":1700000000,"model":"bench","choices":[{"index":0,'
    b'"delta":{"content":"'
)
CHUNK_SUFFIX = b'"},"finish_reason":null}]}\n\n'
STREAM_END = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",'
    b'"created":1700000000,"model":"bench","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)

DEFAULT_CHUNKS = 100


async def chat_completions(request: web.Request) -> web.StreamResponse:
    payload = json.loads(await request.read())
    if payload.get("stream") is not True:
        return web.Response(body=CHAT_COMPLETION, content_type="application/json")

    chunks = int(payload.get("max_tokens") or DEFAULT_CHUNKS)
    gap = request.app["gap"] if payload.get("model") == "gap" else 0.0
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for index in range(chunks):
        if gap and index:
            await asyncio.sleep(gap)
        content = f"{index}:{time.monotonic():.6f}".encode()
        await response.write(CHUNK_PREFIX + content + CHUNK_SUFFIX)
    await response.write(STREAM_END)
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    return web.Response(body=MODELS, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    args = parser.parse_args()

    app = web.Application()
    app["gap"] = args.gap_ms / 1000
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
