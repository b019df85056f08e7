"""jupyter-ai 3.x in a real Jupyter server, with the AKKO persona and its magics aliases.

Runs only where jupyter-ai 3.x is installed (the .venvs/jupyter-ai-3
environment that scripts/test creates); elsewhere the module is skipped.
The upstream is the llama.cpp server on the tiny generated model, or the
project's OpenAI-compatible test server where a test must see the requests.
"""

from __future__ import annotations

import json
import socket
from importlib.metadata import PackageNotFoundError, version

import pytest

try:
    JUPYTER_AI_VERSION = version("jupyter-ai")
except PackageNotFoundError:
    JUPYTER_AI_VERSION = ""
if not JUPYTER_AI_VERSION.startswith("3."):
    pytest.skip(
        f"needs jupyter-ai 3.x, found {JUPYTER_AI_VERSION or 'none'}",
        allow_module_level=True,
    )

from tests.conftest import GATEWAY_KEY  # noqa: E402
from tests.jupyter_ai3_fixtures import (  # noqa: E402
    AKKO_PERSONA_ID,
    JUPYTER_AI3_WARNING_FILTERS,
)
from tests.test_kernel_client import run_in_kernel  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(rule) for rule in JUPYTER_AI3_WARNING_FILTERS]


@pytest.fixture
def jp_server_config(jupyter_ai3_server_config):
    return jupyter_ai3_server_config


@pytest.fixture
def llama_upstream(request):
    """Use the llama.cpp server as the upstream of the test's Jupyter server."""
    server = request.getfixturevalue("llama_server")
    return {"upstream_url": server.base_url, "api_key": ""}


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def chat_requests(upstream) -> list:
    return [r for r in upstream.requests if r.path == "/v1/chat/completions"]


# ------------------------------------------------------------ with llama.cpp


class TestWithModelServer:
    """The llama.cpp server behind the proxy, without a gateway."""

    pytestmark = pytest.mark.models

    @pytest.fixture
    def akko_settings(self, llama_upstream):
        return llama_upstream

    async def test_persona_is_default(self, jupyter_ai3, jp_serverapp):
        await jupyter_ai3.ready()
        page_config = jp_serverapp.web_app.settings["page_config_data"]
        assert page_config["jupyter_ai_default_persona"] == AKKO_PERSONA_ID
        websocket, manager = await jupyter_ai3.open_chat()
        try:
            assert manager.default_persona is not None
            assert manager.default_persona.id == AKKO_PERSONA_ID
            assert manager.default_persona.name == "AKKO"
        finally:
            websocket.close()

    async def test_reply_streams_into_chat(self, jupyter_ai3):
        await jupyter_ai3.ready()
        websocket, manager = await jupyter_ai3.open_chat()
        try:
            reply = await jupyter_ai3.chat(
                websocket, manager, "Show me the top 10 customers by balance"
            )
        finally:
            websocket.close()
        assert reply.text.strip()
        assert "**Error:**" not in reply.text
        # The chat showed the reply growing, chunk by chunk.
        assert len(reply.bodies) >= 3, reply.bodies
        assert reply.bodies[0] != reply.text
        assert reply.text.startswith(reply.bodies[0])

    async def test_picker_lists_gateway_chat_models(self, jupyter_ai3):
        await jupyter_ai3.ready()
        websocket, manager = await jupyter_ai3.open_chat()
        try:
            persona = manager.personas[AKKO_PERSONA_ID]
            configuration = persona.get_model_configuration()
        finally:
            websocket.close()
        options = [option.id for option in configuration.options]
        assert options == ["qwen2.5:3b", "qwen2.5-coder:7b"]
        assert configuration.current is None
        descriptions = {option.id: option.description for option in configuration.options}
        assert descriptions["qwen2.5:3b"] == "default"

    @pytest.mark.ai_env(
        JUPYTER_AI_DEFAULT_MODEL="akko:qwen2.5:3b",
        AKKO_LLM_COMPLETIONS_MODEL="qwen2.5-coder:7b",
    )
    async def test_kernel_magics_alias_answers(self, jupyter_ai3, jp_serverapp):
        await jupyter_ai3.ready()
        code = """
import json, os
ip = get_ipython()
ip.run_line_magic("load_ext", "akko_jupyter_llm")
magics = ip.magics_manager.registry["AiMagics"]
coder = ip.run_cell_magic("ai", "coder -f text", "Write a Trino query")
default = ip.run_cell_magic("ai", "", "Which region sold most?")
print(json.dumps({
    "aliases": magics.aliases,
    "initial": magics.initial_language_model,
    "coder": str(coder),
    "coder_model": coder.metadata,
    "default": str(default),
    "leaked": sorted(k for k, v in os.environ.items() if %r in v),
}, default=str))
""" % GATEWAY_KEY
        output = await run_in_kernel(jp_serverapp, code)
        result = json.loads(output.strip().splitlines()[-1])
        assert result["aliases"]["coder"]["target"] == "litellm_proxy/qwen2.5-coder:7b"
        assert result["aliases"]["coder"]["api_base"].endswith("/akko-llm/v1")
        assert result["aliases"]["chat"]["target"] == "litellm_proxy/qwen2.5:3b"
        assert "qwen2.5:3b" in result["aliases"]
        assert "nomic-embed-text" not in result["aliases"]
        assert result["initial"] == "chat"
        assert result["coder"].strip()
        assert "Error calling language model" not in result["coder"]
        assert result["coder_model"] == {"jupyter_ai_v3": {"model_id": "coder"}}
        assert result["default"].strip()
        assert "Error calling language model" not in result["default"]
        assert result["leaked"] == []


# ------------------------------------------------------------ with the test upstream


async def test_user_pick_is_honoured(jupyter_ai3, upstream):
    await jupyter_ai3.ready()
    websocket, manager = await jupyter_ai3.open_chat()
    try:
        first = await jupyter_ai3.chat(websocket, manager, "hello")
        picked = await jupyter_ai3.chat(
            websocket, manager, "again", model="qwen2.5-coder:7b"
        )
        kept = await jupyter_ai3.chat(websocket, manager, "and again")
    finally:
        websocket.close()
    assert first.text == picked.text == kept.text == "part0 part1 part2 "
    models = [request.json["model"] for request in chat_requests(upstream)]
    assert models == ["qwen2.5:3b", "qwen2.5-coder:7b", "qwen2.5-coder:7b"]
    for request in chat_requests(upstream):
        assert request.json["stream"] is True
        # The gateway got the gateway key from the proxy, not the user's token.
        assert request.headers["Authorization"] == f"Bearer {GATEWAY_KEY}"


@pytest.mark.parametrize("persona_config", [{"max_history_messages": 2}])
async def test_history_is_kept_short(jupyter_ai3, upstream):
    await jupyter_ai3.ready()
    websocket, manager = await jupyter_ai3.open_chat()
    try:
        for prompt in ["first question", "second question", "third question"]:
            await jupyter_ai3.chat(websocket, manager, prompt)
    finally:
        websocket.close()
    messages = chat_requests(upstream)[-1].json["messages"]
    roles = [message["role"] for message in messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "second question"
    assert messages[2]["content"] == "part0 part1 part2 "
    assert messages[-1]["content"] == "third question"


@pytest.mark.akko(upstream_url=closed_port_url())
async def test_gateway_down_reply_is_readable(jupyter_ai3):
    await jupyter_ai3.ready()
    websocket, manager = await jupyter_ai3.open_chat()
    try:
        reply = await jupyter_ai3.chat(websocket, manager, "hello")
    finally:
        websocket.close()
    assert reply.text.startswith("**Error:**")
    assert "qwen2.5:3b" in reply.text
    assert "Cannot connect to the model gateway" in reply.text
    assert "Traceback" not in reply.text


@pytest.mark.ai_env(JUPYTER_AI_DEFAULT_MODEL="qwen2.5-coder:7b")
async def test_jupyternaut_defaults_without_key(
    jupyter_ai3, jp_serverapp, jupyternaut_config_path, proxy
):
    await jupyter_ai3.ready()
    config_manager = jp_serverapp.web_app.settings["jupyternaut.config_manager"]
    assert config_manager.chat_model == "litellm_proxy/qwen2.5-coder:7b"
    assert config_manager.completion_model == "litellm_proxy/qwen2.5-coder:7b"
    assert config_manager.embedding_model == "litellm_proxy/nomic-embed-text"
    saved = jupyternaut_config_path.read_text(encoding="utf-8")
    assert GATEWAY_KEY not in saved
    assert proxy.token not in saved
    # What the browser reads of Jupyternaut's config.
    async with proxy.session.get(
        proxy.server_path("api/jupyternaut/config"), headers=proxy.auth_headers()
    ) as response:
        body = await response.text()
    assert response.status == 200
    assert GATEWAY_KEY not in body
    assert json.loads(body)["model_provider_id"] == "litellm_proxy/qwen2.5-coder:7b"


class TestConfiguredDefaultPersona:
    """An explicit c.PersonaManager.default_persona_id stays in force."""

    other_persona = "jupyter-ai-personas::other::Persona"

    @pytest.fixture
    def jp_server_config(self, jupyter_ai3_server_config):
        config = dict(jupyter_ai3_server_config)
        config["PersonaManager"] = {
            **config["PersonaManager"],
            "default_persona_id": self.other_persona,
        }
        return config

    async def test_configured_default_persona_wins(self, jupyter_ai3, jp_serverapp):
        await jupyter_ai3.ready()
        page_config = jp_serverapp.web_app.settings["page_config_data"]
        assert page_config["jupyter_ai_default_persona"] == self.other_persona
