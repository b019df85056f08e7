"""llama-cpp-python's OpenAI-compatible server on the tiny test model.

One server process serves three model ids named like the platform's Ollama models, all
backed by the same GGUF file: ``qwen2.5:3b`` and ``qwen2.5-coder:7b`` for chat and
completions, ``nomic-embed-text`` for embeddings. llama_cpp.server keeps one model loaded
and reloads when a request names another id, which takes milliseconds for the tiny model.

The server runs through tests/servers/llama_app.py, which is llama_cpp.server's app behind a
middleware that maps ``max_completion_tokens`` to ``max_tokens`` and gives chat requests
without a limit ``max_tokens`` = ``DEFAULT_MAX_TOKENS``. The tiny model never emits its end
token, so an unlimited reply would run until the context (``CONTEXT_SIZE`` tokens) is full:
3 s on a 2-core x86-64 machine, against 10 ms for a 20-token reply.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

from .process import HOST, ServerProcess, start_server

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL_SCRIPT = REPOSITORY_ROOT / "scripts" / "tiny_model.py"
CHAT_MODELS = ("qwen2.5:3b", "qwen2.5-coder:7b")
EMBEDDING_MODEL = "nomic-embed-text"
CONTEXT_SIZE = 2048
DEFAULT_MAX_TOKENS = 64


@cache
def load_tiny_model_module() -> ModuleType:
    """Import scripts/tiny_model.py, which is a script and not part of a package."""
    spec = importlib.util.spec_from_file_location("tiny_model", TINY_MODEL_SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the tiny model generator from {TINY_MODEL_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_model(path: Path) -> Path:
    """Write the tiny test model to ``path`` (see scripts/tiny_model.py) and return the path."""
    return load_tiny_model_module().write_tiny_model(path)


@dataclass
class LlamaServer:
    """A running llama_cpp.server with its OpenAI-compatible ``base_url`` (ending in /v1)."""

    process: ServerProcess
    model_path: Path
    config_path: Path
    chat_models: tuple[str, ...] = CHAT_MODELS
    embedding_model: str = EMBEDDING_MODEL

    @property
    def base_url(self) -> str:
        return f"{self.process.url}/v1"

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    @property
    def model_ids(self) -> tuple[str, ...]:
        return (*self.chat_models, self.embedding_model)

    def stop(self) -> None:
        self.process.stop()


def write_llama_config(
    model_path: Path, config_path: Path, port: int, context_size: int = CONTEXT_SIZE
) -> Path:
    """Write the llama_cpp.server config file that serves every model id from ``model_path``."""
    common = {"model": str(model_path), "n_ctx": context_size, "seed": 0, "verbose": False}
    models = [{**common, "model_alias": alias} for alias in CHAT_MODELS]
    models.append({**common, "model_alias": EMBEDDING_MODEL, "embedding": True})
    config = {"host": HOST, "port": port, "models": models}
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return config_path


def start_llama_server(
    model_path: Path,
    work_dir: Path,
    context_size: int = CONTEXT_SIZE,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    timeout: float = 60.0,
) -> LlamaServer:
    """Start llama_cpp.server on ``model_path`` and return it once ``/v1/models`` responds.

    ``context_size`` is the context in tokens, prompt and reply together.
    ``default_max_tokens`` is the reply limit for chat requests that set none. The config file
    ``llama-server.json`` and the log ``llama-server.log`` are written to ``work_dir``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    config_path = work_dir / "llama-server.json"

    def command(port: int) -> list[str]:
        write_llama_config(model_path, config_path, port, context_size)
        return [
            sys.executable,
            "-m",
            "tests.servers.llama_app",
            "--config_file",
            str(config_path),
            "--default-max-tokens",
            str(default_max_tokens),
        ]

    # llama_cpp.server's create_app loads the file named by CONFIG_FILE in place of the
    # given settings, so a value from the environment is removed.
    process = start_server(
        "llama_cpp.server",
        command,
        "/v1/models",
        work_dir / "llama-server.log",
        env={"CONFIG_FILE": None},
        cwd=REPOSITORY_ROOT,
        timeout=timeout,
    )
    return LlamaServer(process=process, model_path=model_path, config_path=config_path)
