"""Helpers for the diagnostics tests: a test upstream whose behaviour the test sets.

The diagnostics send their own request bodies, so they cannot carry the
``x_test`` object that controls `OpenAIUpstream`. `ScriptedUpstream` applies
``control`` (the same keys as ``x_test``: ``delay``, ``chunks``, ``gap``,
``status``, ...) to every POST instead, and waits ``models_delay`` seconds
before it responds to ``GET /v1/models``, or responds with ``models_answer``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from dataclasses import dataclass, field

from aiohttp import web

from tests.upstreams.openai_compat import OpenAIUpstream, RecordedRequest


@dataclass
class ScriptedUpstream(OpenAIUpstream):
    """`OpenAIUpstream` with a server-side ``control`` for every POST."""

    control: dict = field(default_factory=dict)
    models_delay: float = 0.0
    # (status, text body) that replaces the response to GET /v1/models.
    models_answer: tuple[int, str] | None = None

    async def _answer(self, request: web.Request, recorded: RecordedRequest):
        if recorded.path == "/v1/models":
            if self.models_delay:
                await asyncio.sleep(self.models_delay)
            if self.models_answer is not None:
                status, text = self.models_answer
                return web.Response(status=status, text=text, content_type="text/html")
        return await super()._answer(request, recorded)

    async def _answer_post(self, request: web.Request, recorded: RecordedRequest):
        if self.control:
            payload = recorded.json or {}
            payload["x_test"] = {**self.control, **(payload.get("x_test") or {})}
            # The recorded body becomes the one the upstream acts on.
            recorded.body = json.dumps(payload).encode()
        return await super()._answer_post(request, recorded)

    def count(self, method: str, path: str) -> int:
        return sum(
            1 for recorded in self.requests
            if recorded.method == method and recorded.path == path
        )


def closed_port() -> int:
    """Return a port of 127.0.0.1 that nothing listens on (a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    """Run ``python -m akko_jupyter_llm.cli`` without blocking the event loop.

    The test upstreams run in the test's event loop, so a blocking subprocess
    call would keep them from responding. Returns (exit code, stdout, stderr).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "akko_jupyter_llm.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode, stdout.decode(), stderr.decode()
