"""jupyter-ai 2.x providers named ``akko``: the platform's models in the chat and in ``%%ai``.

- `AkkoChatProvider` (entry point ``jupyter_ai.model_providers``) is LangChain's
  ``ChatOpenAI``; model ids are ``akko:<gateway model id>``, for example
  ``akko:qwen2.5-coder:7b`` (jupyter-ai splits on the first colon only).
- `AkkoEmbeddingsProvider` (entry point ``jupyter_ai.embeddings_model_providers``)
  is LangChain's ``OpenAIEmbeddings``, for ``/learn`` and ``/ask``.

Both send their requests to this Jupyter server's own ``akko-llm/v1`` endpoint
with the user's Jupyter or JupyterHub token (see `model_catalog.endpoint_credentials`),
so the proxy applies its authentication, limits and error messages, and the
gateway key never reaches jupyter-ai's config.json, the browser or a kernel.
The providers declare no API key and no fields, so jupyter-ai stores nothing for them.

The model lists are `model_catalog.CATALOG`, which the server extension fills
from the gateway (see `jupyter_ai_defaults`) and ``%load_ext akko_jupyter_llm``
fills in kernels.

Failures become `AkkoModelError`, whose message says what failed and what to
do. In the chat they become the reply text (see `_reply_with_errors`).

This module imports jupyter-ai; only jupyter-ai's entry points and the other
``jupyter_ai_*`` modules of this package import it.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import openai
from jupyter_ai_magics import BaseProvider
from jupyter_ai_magics.embedding_providers import BaseEmbeddingsProvider
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
)
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from .model_catalog import CATALOG, endpoint_credentials

PROVIDER_ID = "akko"

# Set while jupyter-ai computes an inline completion, whose errors must stay
# errors: a suggestion made of an error message would be inserted into code.
_raise_errors = contextvars.ContextVar("akko_raise_errors", default=False)


class AkkoModelError(Exception):
    """A request to a model through this server's endpoint failed; the message is for users."""


def _connection_settings(kwargs: dict[str, Any]) -> None:
    """Fill in the endpoint URL, the user's token and the retry count, unless given."""
    if kwargs.get("openai_api_base") or kwargs.get("base_url"):
        return
    base_url, token = endpoint_credentials()
    kwargs["base_url"] = base_url
    # The OpenAI SDK sends "Authorization: Bearer <api_key>", which Jupyter
    # accepts as a token. Without a token (authentication off) any value works.
    # NOTE: a server with a password and no token has no token to give, so
    # its requests get HTTP 403. Asking the server, as openai_client() does,
    # would block the server's own event loop where the chat runs.
    kwargs["api_key"] = token or "no-token"
    # The proxy already reports a failure with a readable message; retrying
    # a 502 or 504 only delays that message.
    kwargs.setdefault("max_retries", 0)


def _detail(error: openai.APIError) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or error.message)
    return str(error.message)


def _is_unknown_model(error: openai.APIStatusError, detail: str) -> bool:
    if error.status_code not in (400, 404):
        return False
    body = error.body if isinstance(error.body, dict) else {}
    if body.get("code") in ("model_not_found", "invalid_model"):
        return True
    text = detail.lower()
    return "model" in text and any(
        phrase in text for phrase in ("invalid model", "not found", "does not exist")
    )


def describe_error(error: Exception, model_id: str, served: list[str]) -> str:
    """Return a readable message for a failed request to ``model_id`` (without the provider id)."""
    full_id = f"{PROVIDER_ID}:{model_id}"
    if isinstance(error, openai.APITimeoutError):
        return (
            f"The model {full_id} did not answer in time: the request to this "
            "Jupyter server's model endpoint timed out. The model may still be "
            "loading; try again in a minute."
        )
    if isinstance(error, openai.APIConnectionError):
        return (
            f"The model {full_id} could not be reached, because this Jupyter "
            f"server's model endpoint did not answer ({error}). Restart the "
            "kernel or the server, then try again."
        )
    if isinstance(error, openai.APIStatusError):
        detail = _detail(error)
        if _is_unknown_model(error, detail):
            listing = ", ".join(served) if served else "none could be listed"
            return (
                f"The model gateway does not serve the model {model_id!r}. "
                f"Models served: {listing}. Choose one of them in the chat "
                f"settings, or name it in %%ai as {PROVIDER_ID}:<model>. "
                f"(Gateway message: {detail})"
            )
        if error.status_code == 403 and "akko-llm" not in detail:
            return (
                f"The model {full_id} could not be used: this Jupyter server "
                f"rejected the request's credentials (HTTP 403: {detail}). "
                "Restart the kernel so that it gets the server's current token."
            )
        return f"The model {full_id} failed (HTTP {error.status_code}): {detail}"
    if isinstance(error, openai.APIError):
        # An error event in the middle of a stream.
        return f"The model {full_id} failed while answering: {_detail(error)}"
    return f"The model {full_id} failed: {error}"


def _reply_with_errors(provider: BaseProvider) -> bool:
    """Return whether a failure should become the reply text instead of an exception.

    Only in the chat: jupyter-ai's chat handlers show an exception as a
    traceback. ``server_settings`` is set only in a server process where
    jupyter-ai runs; inline completions set `_raise_errors`.
    """
    return provider.server_settings is not None and not _raise_errors.get()


def _error_reply(message: str) -> str:
    return f"**Error:** {message}"


class AkkoChatProvider(BaseProvider, ChatOpenAI):
    """Chat and completion models served by the platform's gateway."""

    id: ClassVar[str] = PROVIDER_ID
    name: ClassVar[str] = "AKKO"
    models: ClassVar[list[str]] = CATALOG.chat_models
    model_id_key: ClassVar[str] = "model_name"
    model_id_label: ClassVar[str] = "Model"
    pypi_package_deps: ClassVar[list[str]] = ["langchain-openai"]
    help: ClassVar[str] = (
        "Models served by the platform's model gateway, through this Jupyter "
        "server. No API key is needed."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _connection_settings(kwargs)
        super().__init__(*args, **kwargs)

    def _failure(self, error: Exception) -> AkkoModelError:
        return AkkoModelError(
            describe_error(error, self.model_id, list(CATALOG.chat_models))
        )

    def _error_result(self, error: Exception) -> ChatResult:
        text = _error_reply(str(self._failure(error)))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        try:
            return super()._generate(*args, **kwargs)
        except openai.APIError as error:
            if _reply_with_errors(self):
                return self._error_result(error)
            raise self._failure(error) from None

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        try:
            return await super()._agenerate(*args, **kwargs)
        except openai.APIError as error:
            if _reply_with_errors(self):
                return self._error_result(error)
            raise self._failure(error) from None

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        try:
            yield from super()._stream(*args, **kwargs)
        except openai.APIError as error:
            if not _reply_with_errors(self):
                raise self._failure(error) from None
            text = _error_reply(str(self._failure(error)))
            yield ChatGenerationChunk(message=AIMessageChunk(content=text))

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        try:
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk
        except openai.APIError as error:
            if not _reply_with_errors(self):
                raise self._failure(error) from None
            # NOTE: the chat keeps this reply in the conversation memory that
            # jupyter-ai sends with the next prompt, like any other reply.
            text = _error_reply(str(self._failure(error)))
            yield ChatGenerationChunk(message=AIMessageChunk(content=text))

    async def generate_inline_completions(self, request):
        token = _raise_errors.set(True)
        try:
            return await super().generate_inline_completions(request)
        finally:
            _raise_errors.reset(token)

    async def stream_inline_completions(self, request):
        token = _raise_errors.set(True)
        try:
            async for reply in super().stream_inline_completions(request):
                yield reply
        finally:
            _raise_errors.reset(token)


class AkkoEmbeddingsProvider(BaseEmbeddingsProvider, OpenAIEmbeddings):
    """Embedding models served by the platform's gateway."""

    id: ClassVar[str] = PROVIDER_ID
    name: ClassVar[str] = "AKKO"
    models: ClassVar[list[str]] = CATALOG.embedding_models
    model_id_key: ClassVar[str] = "model"
    pypi_package_deps: ClassVar[list[str]] = ["langchain-openai"]
    help: ClassVar[str] = AkkoChatProvider.help

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _connection_settings(kwargs)
        # Otherwise OpenAIEmbeddings downloads a tiktoken vocabulary to split
        # long inputs, which fails without internet access; the gateway's
        # model truncates or rejects over-long inputs itself.
        kwargs.setdefault("check_embedding_ctx_length", False)
        super().__init__(*args, **kwargs)

    def _failure(self, error: Exception) -> AkkoModelError:
        return AkkoModelError(
            describe_error(error, self.model_id, list(CATALOG.embedding_models))
        )

    def embed_documents(self, texts: list[str], chunk_size: int | None = None):
        try:
            return super().embed_documents(texts, chunk_size)
        except openai.APIError as error:
            raise self._failure(error) from None

    async def aembed_documents(self, texts: list[str], chunk_size: int | None = None):
        try:
            return await super().aembed_documents(texts, chunk_size)
        except openai.APIError as error:
            raise self._failure(error) from None
