"""Code in a real kernel started by the server reaches the endpoint with openai_client()."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import GATEWAY_KEY

KERNEL_CODE = """
import json, os
from akko_jupyter_llm import openai_client
client = openai_client(max_retries=0)
models = [model.id for model in client.models.list()]
reply = client.chat.completions.create(
    model="qwen2.5:3b", messages=[{"role": "user", "content": "hi"}]
)
chunks = [
    chunk.choices[0].delta.content
    for chunk in client.chat.completions.create(
        model="qwen2.5:3b", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_body={"x_test": {"chunks": 3}},
    )
    if chunk.choices and chunk.choices[0].delta.content
]
leaked = sorted(name for name, value in os.environ.items() if GATEWAY_KEY in value)
print(json.dumps({"models": models, "reply": reply.choices[0].message.content,
                  "chunks": chunks, "leaked": leaked,
                  "base_url": os.environ.get("AKKO_LLM_BASE_URL")}))
"""


async def run_in_kernel(serverapp, code: str) -> str:
    """Start a kernel through the server's kernel manager, run ``code``, return stdout."""
    kernel_manager = serverapp.kernel_manager
    kernel_id = await kernel_manager.start_kernel()
    kernel = kernel_manager.get_kernel(kernel_id)
    client = kernel.client()
    client.start_channels()
    try:
        await asyncio.wait_for(client.wait_for_ready(), timeout=60)
        message_id = client.execute(code)
        output = []
        while True:
            message = await asyncio.wait_for(client.get_iopub_msg(), timeout=60)
            if message["parent_header"].get("msg_id") != message_id:
                continue
            kind = message["msg_type"]
            if kind == "stream":
                output.append(message["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                break
        return "".join(output)
    finally:
        client.stop_channels()
        await kernel_manager.shutdown_kernel(kernel_id, now=True)


async def test_kernel_reaches_endpoint(proxy, upstream, jp_serverapp):
    await asyncio.sleep(0)  # Let the extension publish the endpoint for kernels.
    output = await run_in_kernel(
        jp_serverapp, f"GATEWAY_KEY = {GATEWAY_KEY!r}\n" + KERNEL_CODE
    )
    result = json.loads(output.strip().splitlines()[-1])
    assert result["models"] == ["qwen2.5:3b", "qwen2.5-coder:7b", "nomic-embed-text"]
    assert result["reply"] == "Hello from the test upstream."
    assert result["chunks"] == ["part0 ", "part1 ", "part2 "]
    assert result["leaked"] == []
    assert result["base_url"] == proxy.endpoint
    # The gateway got the gateway key; the kernel never had it.
    assert len(upstream.requests) == 3
    for recorded in upstream.requests:
        assert recorded.headers["Authorization"] == f"Bearer {GATEWAY_KEY}"


def test_openai_client_outside_a_kernel(monkeypatch):
    from akko_jupyter_llm import openai_client

    monkeypatch.delenv("AKKO_LLM_BASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="AKKO_LLM_BASE_URL is not set"):
        openai_client()


def test_openai_client_prefers_hub_token(monkeypatch):
    from akko_jupyter_llm import openai_client

    monkeypatch.setenv("AKKO_LLM_BASE_URL", "http://127.0.0.1:9/user/alice/akko-llm/v1")
    monkeypatch.setenv("AKKO_LLM_TOKEN", "server-token")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token")
    client = openai_client()
    assert str(client.base_url) == "http://127.0.0.1:9/user/alice/akko-llm/v1/"
    assert client.api_key == "hub-token"
