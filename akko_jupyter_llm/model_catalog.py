"""The gateway's model list as jupyter-ai needs it: chat models apart from embedding models.

- `split_models` sorts the ``data`` of a ``GET /models`` response into chat and
  embedding model ids.
- `fetch_models` (blocking, for kernels) and `fetch_models_async` (for the
  server's event loop) read that list through this server's ``akko-llm/v1``
  endpoint, never from the gateway directly.
- `ModelCatalog` contains the lists that the jupyter-ai providers show, with the
  configured defaults as a fallback while the gateway is unreachable.
- `endpoint_credentials` returns the URL and token that providers use: the ones
  the server extension registered with `set_server_endpoint` in the server
  process, else the kernel's (`kernel_env.kernel_credentials`).

This module imports neither jupyter-ai nor LangChain.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from .kernel_env import kernel_credentials

# Names of common embedding models, for gateways that do not mark them (Ollama's
# /v1/models, llama.cpp): nomic-embed-text, mxbai-embed-large,
# text-embedding-3-small, snowflake-arctic-embed, bge-m3, all-minilm, e5-large.
_EMBEDDING_NAME = re.compile(r"embed|(^|[/:_-])(bge|e5|gte)([/:_-]|$)|minilm", re.I)

_server_endpoint: tuple[str, str] | None = None


class ModelListError(Exception):
    """The model list could not be read; the message says why and what to check."""


def set_server_endpoint(base_url: str, token: str) -> None:
    """Register this server's endpoint for providers running in the server process."""
    global _server_endpoint
    _server_endpoint = (base_url, token)


def endpoint_credentials() -> tuple[str, str]:
    """Return ``(base_url, token)`` of the ``akko-llm/v1`` endpoint, or raise `RuntimeError`."""
    if _server_endpoint is not None:
        return _server_endpoint
    return kernel_credentials()


def is_embedding_model(entry: dict) -> bool:
    """Return whether a ``GET /models`` entry is an embedding model.

    LiteLLM reports ``mode: embedding`` when asked for metadata (at the top level
    or in ``model_info``); other servers are judged by the model's name.
    """
    for info in (entry, entry.get("model_info") or {}, entry.get("metadata") or {}):
        if isinstance(info, dict) and info.get("mode"):
            return info["mode"] == "embedding"
    return bool(_EMBEDDING_NAME.search(str(entry.get("id", ""))))


def split_models(response: dict) -> tuple[list[str], list[str]]:
    """Return ``(chat_models, embedding_models)`` from a ``GET /models`` response body."""
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, list):
        raise ModelListError(
            "The model list from the gateway has no 'data' array; check that "
            "c.AkkoLLM.upstream_url points to an OpenAI-compatible API ending in /v1."
        )
    chat_models: list[str] = []
    embedding_models: list[str] = []
    for entry in data:
        if not isinstance(entry, dict) or not entry.get("id"):
            continue
        target = embedding_models if is_embedding_model(entry) else chat_models
        if entry["id"] not in target:
            target.append(str(entry["id"]))
    return chat_models, embedding_models


def _error_message(status: int, body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:300] or f"HTTP {status}"


def fetch_models(timeout: float) -> tuple[list[str], list[str]]:
    """Read ``(chat_models, embedding_models)`` from the endpoint, blocking up to ``timeout`` s."""
    base_url, token = endpoint_credentials()
    request = urllib.request.Request(
        f"{base_url}/models",
        headers={"Authorization": f"token {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        message = _error_message(error.code, error.read())
        raise ModelListError(
            f"GET {base_url}/models failed with HTTP {error.code}: {message}"
        ) from None
    except (OSError, TimeoutError) as error:
        raise ModelListError(f"GET {base_url}/models failed: {error}") from None
    return split_models(json.loads(body))


async def fetch_models_async(timeout: float) -> tuple[list[str], list[str]]:
    """Read ``(chat_models, embedding_models)`` from the endpoint without blocking the loop."""
    import aiohttp
    from yarl import URL

    base_url, token = endpoint_credentials()
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout)
        ) as session:
            # LiteLLM adds each model's metadata (its mode) when asked; other
            # servers ignore the parameter.
            # encoded=True keeps a base URL such as /user/a%40b/ as it is.
            url = URL(f"{base_url}/models?include_metadata=true", encoded=True)
            async with session.get(url, headers=headers) as response:
                body = await response.read()
                status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ModelListError(
            f"GET {base_url}/models failed: {error or type(error).__name__} "
            f"(timeout {timeout:g} s, c.AkkoJupyterAI.models_timeout)"
        ) from None
    if status != 200:
        raise ModelListError(
            f"GET {base_url}/models failed with HTTP {status}: "
            f"{_error_message(status, body)}"
        )
    try:
        return split_models(json.loads(body))
    except ValueError:
        raise ModelListError(f"GET {base_url}/models did not return JSON") from None


@dataclass
class ModelCatalog:
    """The chat and embedding model ids that the `akko` providers offer.

    Until the gateway's list is read, the lists contain the configured defaults.
    The lists are changed in place, because jupyter-ai reads them from the
    provider classes.
    """

    chat_models: list[str] = field(default_factory=list)
    embedding_models: list[str] = field(default_factory=list)
    from_gateway: bool = False

    def set_fallback(self, chat_models: list[str], embedding_models: list[str]) -> None:
        """Offer the configured defaults until the gateway's list is read."""
        self.from_gateway = False
        self.chat_models[:] = list(dict.fromkeys(model for model in chat_models if model))
        self.embedding_models[:] = list(
            dict.fromkeys(model for model in embedding_models if model)
        )

    def update(self, chat_models: list[str], embedding_models: list[str]) -> None:
        """Offer the gateway's models."""
        self.chat_models[:] = chat_models
        self.embedding_models[:] = embedding_models
        self.from_gateway = True


# Shared by the provider classes and the code that refreshes them.
CATALOG = ModelCatalog()
