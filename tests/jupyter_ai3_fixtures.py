"""Pytest plugin: a real Jupyter server with jupyter-ai 3.x and the AKKO persona.

Importable without jupyter-ai 3.x: only the fixtures import it, and only
tests/test_jupyter_ai3.py uses them (it is skipped without jupyter-ai 3.x).

A test module overrides ``jp_server_config`` with ``jupyter_ai3_server_config``.
The ``ai_env`` marker of tests/jupyter_ai_fixtures.py sets the spawner's
environment. Fixtures:

- ``jupyternaut_config_path``: Jupyternaut's config.json for the test;
- ``jupyter_ai3``: a `JupyterAI3Client` for the running server, whose
  ``ready()`` waits until the gateway's model list has been read and whose
  ``chat()`` sends a message over the chat websocket, as JupyterLab does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

AKKO_PERSONA_ID = "jupyter-ai-personas::akko_jupyter_llm::AkkoPersona"

# LiteLLM's gateway variables, which the server sets for Jupyternaut.
LITELLM_VARIABLES = ("LITELLM_PROXY_API_BASE", "LITELLM_PROXY_API_KEY")

# Warnings that jupyter-ai 3.x and its dependencies emit on import and at start;
# the suite otherwise turns warnings into errors.
JUPYTER_AI3_WARNING_FILTERS = [
    "ignore::DeprecationWarning",
    "ignore::PendingDeprecationWarning",
    "ignore::UserWarning",
    "ignore::pytest.PytestUnraisableExceptionWarning",
    "ignore:Extension endpoints without:jupyter_server.utils.JupyterServerAuthWarning",
]


@pytest.fixture
def jupyternaut_config_path(tmp_path: Path) -> Path:
    path = tmp_path / "jupyternaut-config"
    path.mkdir()
    return path / "config.json"


@pytest.fixture
def persona_config() -> dict:
    """``c.AkkoPersona`` settings of the test's server; override to change them."""
    return {}


@pytest.fixture
def jupyter_ai3_server_config(
    akko_settings, ai_environment, jupyternaut_config_path, persona_config, monkeypatch
) -> dict:
    """Server config with jupyter-ai 3.x's chat, persona manager and Jupyternaut enabled."""
    # Set by the previous test's server, whose token they contain.
    for name in LITELLM_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return {
        "ServerApp": {
            "jpserver_extensions": {
                "akko_jupyter_llm": True,
                "jupyterlab_chat": True,
                "jupyter_ai_router": True,
                "jupyter_ai_persona_manager": True,
                "jupyter_ai_jupyternaut": True,
                "jupyter_server_terminals": False,
            },
            "allow_unauthenticated_access": False,
        },
        "AkkoLLM": akko_settings,
        "ConfigManager": {"config_path": str(jupyternaut_config_path)},
        # No MCP server runs in the tests.
        "PersonaManager": {"builtin_mcp_servers": []},
        "AkkoPersona": persona_config,
    }


@dataclass
class ChatReply:
    """The persona's reply: its text and the bodies that the chat showed while it streamed."""

    text: str
    bodies: list[str] = field(default_factory=list)


class JupyterAI3Client:
    """jupyter-ai 3.x's chat websocket and persona manager on the test server."""

    def __init__(self, serverapp, ws_fetch) -> None:
        self.serverapp = serverapp
        self.ws_fetch = ws_fetch

    @property
    def setup(self):
        """The extension's `JupyterAI3Setup`."""
        app = self.serverapp.extension_manager.extension_points["akko_jupyter_llm"].app
        return app.jupyter_ai3

    async def ready(self, timeout: float = 30) -> None:
        """Wait until the server has started reading the model list, and for the reading."""
        async with asyncio.timeout(timeout):
            while self.setup is None or self.setup._task is None:
                await asyncio.sleep(0.01)
            await self.setup._task

    def persona_managers(self) -> dict:
        settings = self.serverapp.web_app.settings
        return settings.get("jupyter-ai", {}).get("persona-managers", {})

    async def open_chat(self, path: str = "test.chat", timeout: float = 30):
        """Open the chat's websocket; return it once the chat has its personas."""
        websocket = await self.ws_fetch("api", "chat", "ws", path)
        connection = json.loads(await websocket.read_message())
        assert connection["action"] == "connection", connection
        async with asyncio.timeout(timeout):
            while connection["id"] not in self.persona_managers():
                await asyncio.sleep(0.05)
        return websocket, self.persona_managers()[connection["id"]]

    async def chat(
        self,
        websocket,
        manager,
        prompt: str,
        model: str | None = None,
        timeout: float = 120,
    ) -> ChatReply:
        """Send ``prompt`` to the AKKO persona (with a model pick) and return its reply."""
        metadata: dict = {"to_persona": AKKO_PERSONA_ID}
        if model is not None:
            metadata["model"] = {"id": model}
        persona = manager.personas[AKKO_PERSONA_ID]
        await websocket.write_message(
            json.dumps(
                {
                    "type": "client",
                    "action": "send",
                    "id": str(uuid.uuid4()),
                    "body": prompt,
                    "metadata": metadata,
                }
            )
        )
        reply = ChatReply(text="")
        started = False
        async with asyncio.timeout(timeout):
            while True:
                try:
                    raw = await asyncio.wait_for(websocket.read_message(), 0.2)
                except TimeoutError:
                    raw = None
                if raw is not None:
                    frame = json.loads(raw)
                    message = frame.get("message") or {}
                    if message.get("sender") == AKKO_PERSONA_ID:
                        reply.bodies.append(message["body"])
                        reply.text = message["body"]
                started = started or persona.processing or bool(reply.bodies)
                if started and not persona.processing and raw is None:
                    return reply


@pytest.fixture
def jupyter_ai3(jp_serverapp, jp_ws_fetch, proxy) -> JupyterAI3Client:
    return JupyterAI3Client(jp_serverapp, jp_ws_fetch)
