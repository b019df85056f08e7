"""The proxy in front of real model servers, driven by the official clients.

Three upstreams, each a real server on 127.0.0.1: the LiteLLM gateway routing to
the llama.cpp server on the tiny generated model; the llama.cpp server directly
(a deployment without a gateway); and LiteLLM's ``ollama_chat/`` route to the
Ollama-native test upstream. The clients are the async OpenAI SDK and
langchain-openai, because the Jupyter server runs in the test's event loop.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

MESSAGES = [{"role": "user", "content": "Which region had the highest sales?"}]

pytestmark = pytest.mark.models


@pytest.fixture(params=["litellm", "llama"])
def real_upstream(request):
    """The upstream under test: the LiteLLM gateway, or llama.cpp without a gateway."""
    if request.param == "litellm":
        gateway = request.getfixturevalue("litellm_gateway")
        return {"url": gateway.base_url, "key": gateway.master_key, "name": "litellm"}
    server = request.getfixturevalue("llama_server")
    return {"url": server.base_url, "key": "", "name": "llama"}


@pytest.fixture
def akko_settings(real_upstream) -> dict:
    return {"upstream_url": real_upstream["url"], "api_key": real_upstream["key"]}


@pytest.fixture
def client(proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=proxy.endpoint, api_key=proxy.token, max_retries=0, timeout=60
    )


async def test_models(client, real_upstream):
    models = [model.id async for model in client.models.list()]
    assert {"qwen2.5:3b", "qwen2.5-coder:7b", "nomic-embed-text"} <= set(models)


@pytest.mark.parametrize("real_upstream", ["llama"], indirect=True)
async def test_model_by_id_unsupported_upstream(client, real_upstream):
    """llama_cpp.server has no GET /v1/models/{id}: its 404 stays a 404 that says so."""
    with pytest.raises(openai.NotFoundError) as raised:
        await client.models.retrieve("qwen2.5-coder:7b")
    assert "may not support this route" in str(raised.value)


@pytest.mark.parametrize("real_upstream", ["litellm"], indirect=True)
async def test_model_by_id(client, real_upstream):
    model = await client.models.retrieve("qwen2.5-coder:7b")
    assert model.id == "qwen2.5-coder:7b"


async def test_chat_plain(client, real_upstream):
    completion = await client.chat.completions.create(
        model="qwen2.5:3b", messages=MESSAGES, temperature=0, max_tokens=16
    )
    text = completion.choices[0].message.content
    assert text
    assert text.isprintable()
    again = await client.chat.completions.create(
        model="qwen2.5:3b", messages=MESSAGES, temperature=0, max_tokens=16
    )
    assert again.choices[0].message.content == text


async def test_chat_streamed(client, real_upstream):
    stream = await client.chat.completions.create(
        model="qwen2.5-coder:7b", messages=MESSAGES, temperature=0, max_tokens=16, stream=True
    )
    pieces = [
        chunk.choices[0].delta.content
        async for chunk in stream
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(pieces) > 3
    plain = await client.chat.completions.create(
        model="qwen2.5-coder:7b", messages=MESSAGES, temperature=0, max_tokens=16
    )
    assert "".join(pieces) == plain.choices[0].message.content


async def test_completions(client, real_upstream):
    completion = await client.completions.create(
        model="qwen2.5-coder:7b", prompt="SELECT", max_tokens=8, temperature=0
    )
    assert completion.choices[0].text


async def test_embeddings(client, real_upstream):
    response = await client.embeddings.create(
        model="nomic-embed-text", input=["first text", "second text"]
    )
    vectors = [item.embedding for item in response.data]
    assert len(vectors) == 2
    assert len(vectors[0]) == len(vectors[1]) == 64
    assert vectors[0] != vectors[1]


# llama_cpp.server answers any model id with one of its models.
@pytest.mark.parametrize("real_upstream", ["litellm"], indirect=True)
async def test_unknown_model_error_readable(client, real_upstream):
    with pytest.raises(openai.APIStatusError) as raised:
        await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert raised.value.status_code in (400, 404)
    assert "no-such-model" in str(raised.value)


async def test_langchain(proxy, real_upstream):
    # langchain-openai shares one cached HTTP client between instances by
    # default. That client's pooled connections belong to the event loop of
    # an earlier test, so each test gets a client of its own.
    async with httpx.AsyncClient() as http_client:
        chat = ChatOpenAI(
            base_url=proxy.endpoint, api_key=proxy.token, model="qwen2.5:3b",
            temperature=0, max_tokens=16, max_retries=0, http_async_client=http_client,
        )
        reply = await chat.ainvoke("Hello")
        assert reply.content
        pieces = [chunk.content async for chunk in chat.astream("Hello") if chunk.content]
        assert "".join(pieces) == reply.content

        embeddings = OpenAIEmbeddings(
            base_url=proxy.endpoint, api_key=proxy.token, model="nomic-embed-text",
            check_embedding_ctx_length=False, max_retries=0, http_async_client=http_client,
        )
        vectors = await embeddings.aembed_documents(["a", "b", "c"])
        assert len(vectors) == 3


@pytest.mark.parametrize("real_upstream", ["litellm"], indirect=True)
async def test_gateway_rejects_wrong_key(real_upstream, proxy, jp_serverapp):
    extension = jp_serverapp.web_app.settings["akko_jupyter_llm"]
    extension.proxy_state.key._literal = "sk-wrong-key"
    client = openai.AsyncOpenAI(base_url=proxy.endpoint, api_key=proxy.token, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        await client.models.list()
    assert raised.value.status_code == 502
    assert "rejected this Jupyter server's gateway key" in str(raised.value)
    assert "sk-wrong-key" not in str(raised.value)


@pytest.fixture
def ollama_route(litellm_gateway, ollama_upstream):
    ollama_upstream.clear_requests()
    return litellm_gateway


@pytest.mark.parametrize("real_upstream", ["litellm"], indirect=True)
async def test_ollama_native_through_litellm(client, ollama_route, ollama_upstream):
    completion = await client.chat.completions.create(
        model=ollama_route.ollama_model, messages=[{"role": "user", "content": "ping"}]
    )
    assert completion.choices[0].message.content.endswith("ping")
    stream = await client.chat.completions.create(
        model=ollama_route.ollama_model,
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
    )
    text = "".join(
        [chunk.choices[0].delta.content async for chunk in stream
         if chunk.choices and chunk.choices[0].delta.content]
    )
    assert text.endswith("stream me")
    paths = [recorded["path"] for recorded in ollama_upstream.recorded_requests()]
    assert paths.count("/api/chat") == 2


NOTEBOOK_CELL = """
from akko_jupyter_llm import openai_client
client = openai_client(max_retries=0)
stream = client.chat.completions.create(
    model="qwen2.5:3b", stream=True, max_tokens=16, temperature=0,
    messages=[{"role": "user", "content": "Which region had the highest sales?"}],
)
pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
print(len(pieces), repr("".join(pieces)))
"""


@pytest.mark.parametrize("real_upstream", ["litellm"], indirect=True)
async def test_notebook_cell_streams_through_litellm(proxy, real_upstream, jp_serverapp):
    """A notebook cell streams a llama.cpp answer through this proxy and LiteLLM."""
    from tests.test_kernel_client import run_in_kernel

    output = await run_in_kernel(jp_serverapp, NOTEBOOK_CELL)
    count, text = output.strip().split(" ", 1)
    assert int(count) > 3
    direct = openai.AsyncOpenAI(base_url=proxy.endpoint, api_key=proxy.token, max_retries=0)
    reference = await direct.chat.completions.create(
        model="qwen2.5:3b", max_tokens=16, temperature=0, messages=MESSAGES
    )
    assert text == repr(reference.choices[0].message.content)
