"""Run llama_cpp.server's app with a middleware that bounds replies of the tiny test model.

Usage, from the repository root:
python -m tests.servers.llama_app --config_file FILE [--default-max-tokens N]

The app, its routes and the config file format are llama_cpp.server's own (as in
``python -m llama_cpp.server --config_file FILE``). The middleware rewrites the JSON body of
``POST /v1/chat/completions`` and ``POST /v1/completions`` before the app reads it:

- ``max_completion_tokens`` becomes ``max_tokens``. OpenAI renamed the field, LangChain's
  ``ChatOpenAI`` and LiteLLM send the new name, and llama_cpp.server 0.3.36 ignores it.
- A chat request with neither field gets ``max_tokens`` = ``--default-max-tokens``. The
  tiny model never emits its end token, so without a limit every such reply would run
  until the context is full, which takes seconds instead of milliseconds.

Unless the config file sets ``interrupt_requests``, it is turned off. llama_cpp.server
0.3.36 turns it on by default and then ends a streamed reply with ``[DONE]`` as soon as
another request waits for the model, so concurrent streams get no text. A real model
server queues them instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvicorn
from llama_cpp.server.app import create_app
from llama_cpp.server.settings import ConfigFileSettings, ServerSettings

REWRITTEN_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
CHAT_PATH = "/v1/chat/completions"


def rewrite_body(path: str, body: bytes, default_max_tokens: int) -> bytes:
    """Return the request body with the token limit fields rewritten (see the module docstring).

    A body that is not a JSON object is returned unchanged, so that llama_cpp.server
    reports the error itself.
    """
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body
    if not isinstance(payload, dict):
        return body
    completion_limit = payload.pop("max_completion_tokens", None)
    if payload.get("max_tokens") is None and completion_limit is not None:
        payload["max_tokens"] = completion_limit
    if path == CHAT_PATH and payload.get("max_tokens") is None:
        payload["max_tokens"] = default_max_tokens
    return json.dumps(payload).encode("utf-8")


class TokenLimitMiddleware:
    """ASGI middleware that applies ``rewrite_body`` to completion requests."""

    def __init__(self, app, default_max_tokens: int):
        self.app = app
        self.default_max_tokens = default_max_tokens

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in REWRITTEN_PATHS
        ):
            await self.app(scope, receive, send)
            return

        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = rewrite_body(scope["path"], b"".join(chunks), self.default_max_tokens)

        headers = [(name, value) for name, value in scope["headers"] if name != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        scope = {**scope, "headers": headers}
        body_sent = False

        async def replay_receive():
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            # After the body, pass on the client's disconnect so streaming stops with it.
            return await receive()

        await self.app(scope, replay_receive, send)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config_file", type=Path, required=True, help="llama_cpp.server config file (JSON)")
    parser.add_argument(
        "--default-max-tokens",
        type=int,
        default=64,
        help="max_tokens for chat requests that set no limit (default: 64 tokens)",
    )
    arguments = parser.parse_args(argv)

    config = ConfigFileSettings.model_validate_json(arguments.config_file.read_bytes())
    if "interrupt_requests" not in config.model_fields_set:
        config.interrupt_requests = False
    server_settings = ServerSettings.model_validate(config)
    app = create_app(server_settings=server_settings, model_settings=config.models)
    uvicorn.run(
        TokenLimitMiddleware(app, arguments.default_max_tokens),
        host=server_settings.host,
        port=server_settings.port,
    )


if __name__ == "__main__":
    sys.exit(main())
