"""Pytest plugin with session-wide model servers on 127.0.0.1.

Fixtures, all session-scoped and stopped at the end of the session:

- ``tiny_model_path``: Path of the tiny random-weight GGUF model (scripts/tiny_model.py).
- ``llama_server``: llama-cpp-python's OpenAI-compatible server on that model, serving
  ``qwen2.5:3b``, ``qwen2.5-coder:7b`` and ``nomic-embed-text``. Attributes: ``base_url``
  (ends in /v1), ``log_path``, ``chat_models``, ``embedding_model``, ``model_ids``.
- ``ollama_upstream``: the Ollama-native test upstream. Attributes: ``base_url`` (the
  Ollama root URL, without /v1), ``log_path``, ``recorded_requests()``, ``clear_requests()``.
- ``litellm_gateway``: a LiteLLM proxy in front of both. Attributes: ``base_url`` (ends in
  /v1), ``url`` (the root, for ``/health/*``), ``log_path``, ``master_key``, ``model_ids``,
  ``chat_models``, ``embedding_model``, ``ollama_model``.

Config files and server logs are written to one directory under pytest's base temporary
directory (``model-servers*``), which pytest keeps for the last few sessions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.litellm import LiteLLMGateway, start_litellm_gateway
from tests.servers.llama import LlamaServer, start_llama_server, write_tiny_model
from tests.servers.ollama_upstream import OllamaUpstream, start_ollama_upstream


@pytest.fixture(scope="session")
def model_servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory for the model servers' config files and logs."""
    return tmp_path_factory.mktemp("model-servers")


@pytest.fixture(scope="session")
def tiny_model_path(model_servers_dir: Path) -> Path:
    return write_tiny_model(model_servers_dir / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def llama_server(tiny_model_path: Path, model_servers_dir: Path) -> Iterator[LlamaServer]:
    server = start_llama_server(tiny_model_path, model_servers_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ollama_upstream(model_servers_dir: Path) -> Iterator[OllamaUpstream]:
    upstream = start_ollama_upstream(model_servers_dir)
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def litellm_gateway(
    llama_server: LlamaServer, ollama_upstream: OllamaUpstream, model_servers_dir: Path
) -> Iterator[LiteLLMGateway]:
    gateway = start_litellm_gateway(llama_server, ollama_upstream, model_servers_dir)
    yield gateway
    gateway.stop()
