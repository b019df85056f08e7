"""The platform's default models, read from the environment the spawner sets.

- chat: ``JUPYTER_AI_DEFAULT_MODEL``, which may carry the jupyter-ai provider
  prefix ``akko:`` (``akko:qwen2.5:3b``); default ``qwen2.5:3b``;
- embeddings: ``AKKO_LLM_EMBEDDINGS_MODEL``; default ``nomic-embed-text``;
- completions (inline code completion): ``AKKO_LLM_COMPLETIONS_MODEL``; default
  ``qwen2.5-coder:7b``.

A blank variable counts as unset. This module imports only the standard library,
so the server extension, the command-line tool and the jupyter-ai provider can
all use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

CHAT_MODEL_ENV = "JUPYTER_AI_DEFAULT_MODEL"
EMBEDDINGS_MODEL_ENV = "AKKO_LLM_EMBEDDINGS_MODEL"
COMPLETIONS_MODEL_ENV = "AKKO_LLM_COMPLETIONS_MODEL"

DEFAULT_CHAT_MODEL = "qwen2.5:3b"
DEFAULT_EMBEDDINGS_MODEL = "nomic-embed-text"
DEFAULT_COMPLETIONS_MODEL = "qwen2.5-coder:7b"

# The jupyter-ai provider id of this package; model ids are split on the first
# colon only, because Ollama's ids contain colons too (``akko:qwen2.5:3b``).
PROVIDER_PREFIX = "akko:"


@dataclass(frozen=True)
class DefaultModels:
    """The gateway model ids used when a client names no model."""

    chat: str
    embeddings: str
    completions: str

    def as_dict(self) -> dict[str, str]:
        return {
            "chat": self.chat,
            "embeddings": self.embeddings,
            "completions": self.completions,
        }


def strip_provider_prefix(model_id: str) -> str:
    """Return ``model_id`` without a leading ``akko:`` provider prefix."""
    if model_id.startswith(PROVIDER_PREFIX):
        return model_id[len(PROVIDER_PREFIX) :]
    return model_id


def _read(environ: Mapping[str, str], name: str, fallback: str) -> str:
    value = environ.get(name, "").strip()
    return value or fallback


def read_default_models(environ: Mapping[str, str] | None = None) -> DefaultModels:
    """Read the default model ids from ``environ``, by default ``os.environ``."""
    if environ is None:
        environ = os.environ
    chat = strip_provider_prefix(_read(environ, CHAT_MODEL_ENV, DEFAULT_CHAT_MODEL))
    return DefaultModels(
        # A value of only "akko:" leaves nothing, which counts as unset too.
        chat=chat.strip() or DEFAULT_CHAT_MODEL,
        embeddings=_read(environ, EMBEDDINGS_MODEL_ENV, DEFAULT_EMBEDDINGS_MODEL),
        completions=_read(environ, COMPLETIONS_MODEL_ENV, DEFAULT_COMPLETIONS_MODEL),
    )


def default_model_env(kind: str) -> str:
    """Return the environment variable that sets the default ``kind`` model."""
    return {
        "chat": CHAT_MODEL_ENV,
        "embeddings": EMBEDDINGS_MODEL_ENV,
        "completions": COMPLETIONS_MODEL_ENV,
    }[kind]
