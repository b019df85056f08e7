"""A real LiteLLM proxy in front of the llama.cpp test server and the Ollama test upstream.

The generated config has a random master key in ``general_settings.master_key``, no
database, and ``router_settings.disable_cooldowns: true``, because otherwise the router
puts a deployment in cooldown after upstream errors and responds with 429 until it ends. ``LITELLM_LOCAL_MODEL_COST_MAP=True``
keeps LiteLLM from downloading its price list at import. Models:

- ``qwen2.5:3b`` and ``qwen2.5-coder:7b``: chat and completions on the llama.cpp server,
  through LiteLLM's OpenAI-compatible provider;
- ``nomic-embed-text``: embeddings on the llama.cpp server (``model_info.mode: embedding``);
- ``ollama-test``: ``ollama_chat/qwen2.5:3b`` on the Ollama-native test upstream.

Behaviour observed with litellm 1.108.7 and no database (``prisma`` installed):

- wrong key: 400 ``{"error": {"message": "No connected db.", "type": "no_db_connection",
  "param": null, "code": "400"}}``;
- missing key: 401 ``{"error": {"message": "Authentication Error, No api key passed in.",
  "type": "auth_error", "param": "None", "code": "401"}}``;
- unknown model (valid key): 400 ``{"error": {"message": "/chat/completions: Invalid model
  name passed in model=NAME. Call `/v1/models` to view available models for your key.",
  "type": "invalid_request_error", "param": null, "code": "400", ...}}``.

The proxy took 5 to 7 s to start and used about 330 MB of memory (measured on a 2-core
x86-64 machine), so tests share one per session.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .llama import CHAT_MODELS, EMBEDDING_MODEL, LlamaServer
from .ollama_upstream import OllamaUpstream
from .process import HOST, ServerProcess, start_server

OLLAMA_TEST_MODEL = "ollama-test"
OLLAMA_TEST_UPSTREAM_MODEL = "qwen2.5:3b"


@dataclass
class LiteLLMGateway:
    """A running LiteLLM proxy. ``base_url`` ends in /v1, ``url`` is the server root."""

    process: ServerProcess
    master_key: str
    config_path: Path
    chat_models: tuple[str, ...] = CHAT_MODELS
    embedding_model: str = EMBEDDING_MODEL
    ollama_model: str = OLLAMA_TEST_MODEL

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def base_url(self) -> str:
        return f"{self.process.url}/v1"

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    @property
    def model_ids(self) -> tuple[str, ...]:
        return (*self.chat_models, self.embedding_model, self.ollama_model)

    def stop(self) -> None:
        self.process.stop()


def generate_master_key() -> str:
    # LiteLLM expects keys to start with "sk-".
    return "sk-test-" + secrets.token_hex(16)


def build_litellm_config(
    llama_server: LlamaServer, ollama_upstream: OllamaUpstream, master_key: str
) -> dict:
    """Return the LiteLLM proxy config that routes the platform's models to the test servers."""
    # llama_cpp.server accepts any key, but LiteLLM's OpenAI provider requires one.
    llama_params = {"api_base": llama_server.base_url, "api_key": "unused"}
    model_list = [
        {
            "model_name": name,
            "litellm_params": {"model": f"openai/{name}", **llama_params},
        }
        for name in llama_server.chat_models
    ]
    model_list.append(
        {
            "model_name": llama_server.embedding_model,
            "litellm_params": {"model": f"openai/{llama_server.embedding_model}", **llama_params},
            "model_info": {"mode": "embedding"},
        }
    )
    model_list.append(
        {
            "model_name": OLLAMA_TEST_MODEL,
            "litellm_params": {
                "model": f"ollama_chat/{OLLAMA_TEST_UPSTREAM_MODEL}",
                "api_base": ollama_upstream.base_url,
            },
        }
    )
    return {
        "model_list": model_list,
        "general_settings": {"master_key": master_key},
        "router_settings": {"disable_cooldowns": True},
    }


def start_litellm_gateway(
    llama_server: LlamaServer,
    ollama_upstream: OllamaUpstream,
    work_dir: Path,
    master_key: str | None = None,
    timeout: float = 90.0,
) -> LiteLLMGateway:
    """Start the LiteLLM proxy and return it once ``/health/liveliness`` responds.

    The config ``litellm.yaml`` and the log ``litellm.log`` are written to ``work_dir``.
    A random master key is generated unless ``master_key`` is given.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    master_key = master_key or generate_master_key()
    config_path = work_dir / "litellm.yaml"
    config = build_litellm_config(llama_server, ollama_upstream, master_key)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    config_path.chmod(0o600)

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "litellm.proxy.proxy_cli",
            "--config",
            str(config_path),
            "--host",
            HOST,
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]

    # Variables that would give the proxy a database or another master key are removed.
    environment: dict[str, str | None] = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DATABASE_URL": None,
        "LITELLM_MASTER_KEY": None,
        "STORE_MODEL_IN_DB": None,
    }
    process = start_server(
        "LiteLLM proxy",
        command,
        "/health/liveliness",
        work_dir / "litellm.log",
        env=environment,
        cwd=work_dir,
        timeout=timeout,
    )
    return LiteLLMGateway(process=process, master_key=master_key, config_path=config_path)
