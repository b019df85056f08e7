"""Pytest plugin: a real Jupyter server with jupyter-ai 2.x and the akko providers.

A test module that needs jupyter-ai overrides ``jp_server_config`` with
``jupyter_ai_server_config``. Markers set the spawner's environment and the
user's saved jupyter-ai choice before the server starts:

- ``@pytest.mark.ai_env(JUPYTER_AI_DEFAULT_MODEL="akko:qwen2.5-coder:7b")``;
- ``@pytest.mark.ai_saved(model_provider_id="akko:qwen2.5:3b")``: written to
  jupyter-ai's config.json as if the user had chosen it earlier.

Fixtures:

- ``jupyter_ai_dir``: the directory of jupyter-ai's config.json for the test;
- ``jupyter_ai``: a `JupyterAIClient` for the running server, whose
  ``ready()`` waits until the gateway's model list has been read;
- ``server_log``: the extension's log records, for asserting warnings.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

# The spawner's variables that the akko providers read; cleared for each test.
SPAWNER_VARIABLES = (
    "JUPYTER_AI_DEFAULT_PROVIDER",
    "JUPYTER_AI_DEFAULT_MODEL",
    "AKKO_LLM_EMBEDDINGS_MODEL",
    "AKKO_LLM_COMPLETIONS_MODEL",
    "AKKO_LLM_DEFAULT_MODEL_PRECEDENCE",
    "AKKO_LLM_MODELS_TIMEOUT",
    "AKKO_LLM_MODELS_REFRESH_INTERVAL",
)

# Warnings that jupyter-ai 2.31 and its LangChain 0.3 dependencies emit on
# import and at start; the suite otherwise turns warnings into errors.
JUPYTER_AI_WARNING_FILTERS = [
    "ignore::DeprecationWarning",
    "ignore::PendingDeprecationWarning",
    "ignore::UserWarning:langchain",
    "ignore::UserWarning:langchain_core",
    "ignore::UserWarning:pydantic",
    "ignore:.*LangChainDeprecationWarning.*",
    "ignore::pytest.PytestUnraisableExceptionWarning",
    # jupyter-ai's chat websocket and inline completion handlers lack an
    # authentication decorator; with allow_unauthenticated_access off,
    # jupyter_server warns and then requires authentication for them anyway.
    "ignore:Extension endpoints without:jupyter_server.utils.JupyterServerAuthWarning",
]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ai_env(**variables): the spawner's environment for the test server"
    )
    config.addinivalue_line(
        "markers", "ai_saved(**choices): the user's saved jupyter-ai config.json entries"
    )


@pytest.fixture
def jupyter_ai_dir(tmp_path: Path) -> Path:
    path = tmp_path / "jupyter-ai-config"
    path.mkdir()
    return path


@pytest.fixture
def ai_environment(request, monkeypatch) -> dict[str, str]:
    """Set the spawner's variables from the ``ai_env`` marker (others are unset)."""
    for name in SPAWNER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    variables = {}
    marker = request.node.get_closest_marker("ai_env")
    if marker is not None:
        variables = dict(marker.kwargs)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


@pytest.fixture
def jupyter_ai_server_config(
    request, akko_settings, jupyter_ai_dir, ai_environment
) -> dict:
    """Server config with jupyter-ai enabled and its config.json under ``jupyter_ai_dir``."""
    config_path = jupyter_ai_dir / "config.json"
    marker = request.node.get_closest_marker("ai_saved")
    if marker is not None:
        saved = {
            "model_provider_id": None,
            "embeddings_provider_id": None,
            "completions_model_provider_id": None,
            "send_with_shift_enter": False,
            "fields": {},
            "api_keys": {},
            "completions_fields": {},
            "embeddings_fields": {},
        }
        saved.update(marker.kwargs)
        config_path.write_text(json.dumps(saved), encoding="utf-8")
    return {
        "ServerApp": {
            "jpserver_extensions": {
                "akko_jupyter_llm": True,
                "jupyter_ai": True,
                "jupyter_server_terminals": False,
            },
            "allow_unauthenticated_access": False,
        },
        "AkkoLLM": akko_settings,
        "ConfigManager": {
            "config_path": str(config_path),
            "schema_path": str(jupyter_ai_dir / "config_schema.json"),
        },
    }


class LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG, containing: str = "") -> list[str]:
        return [
            record.getMessage()
            for record in self.records
            if record.levelno >= level and containing in record.getMessage()
        ]


@pytest.fixture
def server_log(jp_serverapp):
    """Records of the extension's log from the moment the server starts listening.

    The extension's logger gets its handlers when the server is configured,
    so the recorder is added afterwards and misses what was logged while the
    extension loaded.
    """
    recorder = LogRecorder()
    logger = jp_serverapp.extension_manager.extension_points["akko_jupyter_llm"].app.log
    logger.addHandler(recorder)
    yield recorder
    logger.removeHandler(recorder)


class JupyterAIClient:
    """jupyter-ai's REST API and chat websocket on the test server."""

    def __init__(self, serverapp, fetch, ws_fetch) -> None:
        self.serverapp = serverapp
        self.fetch = fetch
        self.ws_fetch = ws_fetch

    @property
    def setup(self):
        """The extension's `JupyterAISetup`."""
        app = self.serverapp.extension_manager.extension_points["akko_jupyter_llm"].app
        return app.jupyter_ai

    async def ready(self, timeout: float = 30) -> None:
        """Wait until the server has started reading the model list, and for the reading."""
        async with asyncio.timeout(timeout):
            while self.setup is None or self.setup._task is None:
                await asyncio.sleep(0.01)
            await self.setup._task

    async def get_json(self, *parts: str):
        response = await self.fetch(*parts)
        return json.loads(response.body)

    async def config(self) -> dict:
        return await self.get_json("api", "ai", "config")

    async def akko_provider(self, kind: str = "") -> dict:
        """Return the ``akko`` entry of ``/api/ai/providers`` (or ``/embeddings``)."""
        parts = ["api", "ai", "providers"] + ([kind] if kind else [])
        listing = await self.get_json(*parts)
        matches = [entry for entry in listing["providers"] if entry["id"] == "akko"]
        assert len(matches) == 1, listing
        return matches[0]

    async def chat(self, prompt: str, timeout: float = 120) -> str:
        """Send ``prompt`` to the chat and return the complete agent reply."""
        websocket = await self.ws_fetch("api", "ai", "chats")
        try:
            async with asyncio.timeout(timeout):
                connection = json.loads(await websocket.read_message())
                assert connection["type"] == "connection", connection
                await websocket.write_message(json.dumps({"prompt": prompt}))
                return await self._read_reply(websocket)
        finally:
            websocket.close()

    @staticmethod
    async def _read_reply(websocket) -> str:
        human_id = None
        stream_id = None
        parts: list[str] = []
        while True:
            raw = await websocket.read_message()
            assert raw is not None, "the chat websocket closed before the reply"
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "human":
                human_id = message["id"]
            elif kind == "agent" and message.get("reply_to") == human_id:
                return message["body"]
            elif kind == "agent-stream" and message.get("reply_to") == human_id:
                stream_id = message["id"]
                parts.append(message.get("body", ""))
            elif kind == "agent-stream-chunk" and message["id"] == stream_id:
                parts.append(message["content"])
                if message["stream_complete"]:
                    return "".join(parts)


@pytest.fixture
def jupyter_ai(jp_serverapp, jp_fetch, jp_ws_fetch, proxy) -> JupyterAIClient:
    return JupyterAIClient(jp_serverapp, jp_fetch, jp_ws_fetch)
