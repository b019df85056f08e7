"""jupyter-ai 2.x in a real Jupyter server, with the akko providers and the test upstream.

The upstream is the project's OpenAI-compatible test server, so these tests
control what the gateway serves and how it fails. Tests against the real
LiteLLM gateway and llama.cpp server are in test_jupyter_ai_models.py.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from tests.conftest import GATEWAY_KEY
from tests.jupyter_ai_fixtures import JUPYTER_AI_WARNING_FILTERS

# jupyter-ai 3.x has no providers; its tests are in test_jupyter_ai3.py.
pytest.importorskip("jupyter_ai_magics", reason="needs jupyter-ai 2.x")

pytestmark = [pytest.mark.filterwarnings(rule) for rule in JUPYTER_AI_WARNING_FILTERS]


@pytest.fixture
def jp_server_config(jupyter_ai_server_config):
    return jupyter_ai_server_config


def closed_port_url() -> str:
    """Return a /v1 URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def saved_config(jupyter_ai_dir) -> dict:
    return json.loads((jupyter_ai_dir / "config.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------ defaults


async def test_fresh_user_gets_builtin_defaults(jupyter_ai):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:qwen2.5:3b"
    assert config["completions_model_provider_id"] == "akko:qwen2.5-coder:7b"
    assert config["embeddings_provider_id"] == "akko:nomic-embed-text"
    # Nothing secret is stored: the providers need no API key.
    assert config["api_keys"] == []


@pytest.mark.ai_env(
    JUPYTER_AI_DEFAULT_PROVIDER="akko",
    JUPYTER_AI_DEFAULT_MODEL="akko:qwen2.5-coder:7b",
    AKKO_LLM_EMBEDDINGS_MODEL="nomic-embed-text",
    AKKO_LLM_COMPLETIONS_MODEL="qwen2.5:3b",
)
async def test_fresh_user_gets_spawner_defaults(jupyter_ai, jupyter_ai_dir):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:qwen2.5-coder:7b"
    assert config["completions_model_provider_id"] == "akko:qwen2.5:3b"
    assert saved_config(jupyter_ai_dir)["api_keys"] == {}


@pytest.mark.ai_env(JUPYTER_AI_DEFAULT_MODEL="qwen2.5-coder:7b")
async def test_default_model_without_prefix(jupyter_ai):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:qwen2.5-coder:7b"


@pytest.mark.ai_env(
    JUPYTER_AI_DEFAULT_MODEL="   ",
    AKKO_LLM_EMBEDDINGS_MODEL="",
    AKKO_LLM_COMPLETIONS_MODEL=" ",
)
async def test_blank_variables_are_ignored(jupyter_ai):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:qwen2.5:3b"
    assert config["embeddings_provider_id"] == "akko:nomic-embed-text"
    assert config["completions_model_provider_id"] == "akko:qwen2.5-coder:7b"


@pytest.mark.ai_env(JUPYTER_AI_DEFAULT_MODEL="llama3.3:70b")
async def test_unserved_default_warns_once(server_log, jupyter_ai):
    await jupyter_ai.ready()
    await jupyter_ai.setup.refresh_models()
    warnings = server_log.messages(logging.WARNING, "akko:llama3.3:70b")
    assert len(warnings) == 1, warnings
    assert "qwen2.5:3b, qwen2.5-coder:7b" in warnings[0]
    assert "not served" in warnings[0]


# ------------------------------------------------------------------ providers


async def test_providers_list_gateway_chat_models(jupyter_ai, upstream):
    upstream.models = [
        {"id": model_id, "object": "model"}
        for model_id in ["qwen2.5:3b", "qwen2.5-coder:7b", "nomic-embed-text", "sql:1b"]
    ]
    await jupyter_ai.ready()
    provider = await jupyter_ai.akko_provider()
    assert provider["models"] == ["qwen2.5:3b", "qwen2.5-coder:7b", "sql:1b"]
    assert provider["chat_models"] == provider["models"]
    assert provider["auth_strategy"] is None
    assert provider["fields"] == []
    embeddings = await jupyter_ai.akko_provider("embeddings")
    assert embeddings["models"] == ["nomic-embed-text"]


async def test_provider_recognises_litellm_mode(jupyter_ai, upstream):
    upstream.models = [
        {"id": "qwen2.5:3b", "object": "model"},
        {"id": "vectors", "object": "model", "model_info": {"mode": "embedding"}},
    ]
    await jupyter_ai.ready()
    assert (await jupyter_ai.akko_provider())["models"] == ["qwen2.5:3b"]
    assert (await jupyter_ai.akko_provider("embeddings"))["models"] == ["vectors"]


async def test_models_refresh_later(jupyter_ai, upstream):
    await jupyter_ai.ready()
    upstream.models = [{"id": "qwen3:8b", "object": "model"}]
    assert await jupyter_ai.setup.refresh_models()
    assert (await jupyter_ai.akko_provider())["models"] == ["qwen3:8b"]


@pytest.mark.akko(upstream_url=closed_port_url())
async def test_gateway_down_falls_back_to_defaults(server_log, jupyter_ai):
    started = time.perf_counter()
    await jupyter_ai.ready()
    assert time.perf_counter() - started < 10
    provider = await jupyter_ai.akko_provider()
    assert provider["models"] == ["qwen2.5:3b", "qwen2.5-coder:7b"]
    embeddings = await jupyter_ai.akko_provider("embeddings")
    assert embeddings["models"] == ["nomic-embed-text"]

    # A later failure is not logged as a warning again.
    assert not await jupyter_ai.setup.refresh_models()
    warnings = server_log.messages(logging.WARNING, "cannot read the gateway's models")
    assert len(warnings) == 1, warnings
    assert "Cannot connect to the model gateway" in warnings[0]


# ------------------------------------------------------------------ chat


async def test_chat_reply_through_the_proxy(jupyter_ai, upstream):
    await jupyter_ai.ready()
    reply = await jupyter_ai.chat("Show me the top 10 customers by total balance")
    assert reply == "part0 part1 part2 "
    chats = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 1
    assert chats[0].json["model"] == "qwen2.5:3b"
    assert chats[0].json["stream"] is True
    # The gateway got the gateway key from the proxy, not the user's token.
    assert chats[0].headers["Authorization"] == f"Bearer {GATEWAY_KEY}"


@pytest.mark.akko(upstream_url=closed_port_url())
async def test_chat_shows_gateway_down_readably(jupyter_ai):
    await jupyter_ai.ready()
    reply = await jupyter_ai.chat("hello")
    assert "Traceback" not in reply
    assert "akko:qwen2.5:3b" in reply
    assert "Cannot connect to the model gateway" in reply
    assert "AKKO_LLM_UPSTREAM_URL" in reply or "upstream_url" in reply


@pytest.mark.akko(api_key="sk-wrong-key")
async def test_chat_shows_rejected_key_readably(jupyter_ai):
    await jupyter_ai.ready()
    reply = await jupyter_ai.chat("hello")
    assert "Traceback" not in reply
    assert "rejected this Jupyter server's gateway key" in reply
    assert "sk-wrong-key" not in reply


@pytest.mark.akko(first_byte_timeout=0.5)
async def test_embeddings_timeout_raises_readable_error(jupyter_ai, upstream):
    from akko_jupyter_llm.jupyter_ai_providers import (
        AkkoEmbeddingsProvider,
        AkkoModelError,
    )

    await jupyter_ai.ready()
    provider = AkkoEmbeddingsProvider(
        model_id="nomic-embed-text",
        model_kwargs={"extra_body": {"x_test": {"delay": 3}}},
    )
    with pytest.raises(AkkoModelError, match="Timed out after 0.5 s") as caught:
        await provider.aembed_documents(["one"])
    assert "akko:nomic-embed-text" in str(caught.value)


async def test_embeddings_provider_returns_vectors(jupyter_ai, upstream):
    from akko_jupyter_llm.jupyter_ai_providers import AkkoEmbeddingsProvider

    await jupyter_ai.ready()
    provider = AkkoEmbeddingsProvider(model_id="nomic-embed-text")
    vectors = await provider.aembed_documents(["first", "second"])
    assert len(vectors) == 2
    assert all(len(vector) > 0 for vector in vectors)
    request = [r for r in upstream.requests if r.path == "/v1/embeddings"][-1]
    assert request.json["model"] == "nomic-embed-text"
    # Plain strings, not token ids: no tokenizer was downloaded.
    assert request.json["input"] == ["first", "second"]


# ------------------------------------------------------------------ precedence


@pytest.mark.ai_env(JUPYTER_AI_DEFAULT_MODEL="qwen2.5:3b")
@pytest.mark.ai_saved(model_provider_id="akko:qwen2.5-coder:7b")
async def test_fill_missing_keeps_saved_choice(jupyter_ai):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:qwen2.5-coder:7b"
    # Choices the user never made are filled in.
    assert config["embeddings_provider_id"] == "akko:nomic-embed-text"


@pytest.mark.ai_env(JUPYTER_AI_DEFAULT_MODEL="qwen2.5:3b")
@pytest.mark.ai_saved(model_provider_id="akko:retired-model:1b")
async def test_fill_missing_keeps_unserved_choice(jupyter_ai):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:retired-model:1b"


@pytest.mark.ai_env(
    JUPYTER_AI_DEFAULT_MODEL="qwen2.5:3b",
    AKKO_LLM_DEFAULT_MODEL_PRECEDENCE="replace-unserved",
)
@pytest.mark.ai_saved(
    model_provider_id="akko:retired-model:1b",
    completions_model_provider_id="akko:qwen2.5:3b",
)
async def test_replace_unserved_replaces_retired_choice(jupyter_ai, jupyter_ai_dir):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:qwen2.5:3b"
    # A saved choice that the gateway still serves stays.
    assert config["completions_model_provider_id"] == "akko:qwen2.5:3b"
    assert saved_config(jupyter_ai_dir)["model_provider_id"] == "akko:qwen2.5:3b"


@pytest.mark.ai_env(
    JUPYTER_AI_DEFAULT_MODEL="qwen2.5:3b",
    AKKO_LLM_DEFAULT_MODEL_PRECEDENCE="replace-unserved",
)
@pytest.mark.ai_saved(model_provider_id="akko:qwen2.5-coder:7b")
async def test_replace_unserved_keeps_served_choice(jupyter_ai):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:qwen2.5-coder:7b"


@pytest.mark.ai_env(
    JUPYTER_AI_DEFAULT_MODEL="qwen2.5:3b",
    AKKO_LLM_DEFAULT_MODEL_PRECEDENCE="replace-unserved",
)
@pytest.mark.ai_saved(model_provider_id="akko:retired-model:1b")
@pytest.mark.akko(upstream_url=closed_port_url())
async def test_replace_unserved_waits_for_the_model_list(jupyter_ai):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    # Without the gateway's list, nothing is known to be retired.
    assert config["model_provider_id"] == "akko:retired-model:1b"


@pytest.mark.ai_env(
    JUPYTER_AI_DEFAULT_MODEL="qwen2.5:3b",
    AKKO_LLM_DEFAULT_MODEL_PRECEDENCE="always",
)
@pytest.mark.ai_saved(
    model_provider_id="akko:qwen2.5-coder:7b",
    embeddings_provider_id="akko:other-embed",
)
async def test_always_replaces_saved_choice(jupyter_ai, jupyter_ai_dir):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:qwen2.5:3b"
    assert config["embeddings_provider_id"] == "akko:nomic-embed-text"
    assert saved_config(jupyter_ai_dir)["model_provider_id"] == "akko:qwen2.5:3b"


@pytest.mark.ai_env(AKKO_LLM_DEFAULT_MODEL_PRECEDENCE="sometimes")
async def test_invalid_precedence_is_reported(jupyter_ai):
    await jupyter_ai.ready()
    settings = jupyter_ai.setup.settings
    assert settings.default_model_precedence == "fill-missing"
    assert len(settings.env_problems) == 1
    assert "'sometimes' is not one of fill-missing" in settings.env_problems[0]
