"""The jupyter-ai 3.x persona ``AKKO``, which replies in the chat with the platform's models.

`AkkoPersona` (entry point ``jupyter_ai.personas``) sends each chat message,
with a short recent history, to this Jupyter server's own ``akko-llm/v1``
endpoint with the user's Jupyter or JupyterHub token, and streams the reply
into the chat. The proxy adds the gateway key on the server side, so the key
never reaches the chat, the browser or jupyter-ai's files.

The chat's model picker lists the gateway's chat models
(`model_catalog.CATALOG`, filled by `jupyter_ai3_defaults`). Its "Default"
entry is the spawner's default chat model (``JUPYTER_AI_DEFAULT_MODEL``).

This module imports jupyter-ai 3.x; only its entry point and the other
``jupyter_ai3_*`` modules import it.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
from jupyter_ai_persona_manager import (
    BasePersona,
    ModelConfiguration,
    ModelOption,
    PersonaDefaults,
)
from jupyterlab_chat.models import Message
from traitlets import Int

from .jupyter_ai3_defaults import current_default_models
from .model_catalog import CATALOG, endpoint_credentials

AVATAR_PATH = str(Path(__file__).with_name("jupyter_ai3_avatar.svg"))

SYSTEM_PROMPT = (
    "You are AKKO, the assistant of a data platform with JupyterLab, a Trino "
    "lakehouse over Iceberg tables and pgvector. Answer briefly and precisely. "
    "Write code in Markdown code blocks with the language named, SQL for Trino."
)

# Personas alive in open chats, so a new model list reaches their pickers.
_LIVE_PERSONAS: weakref.WeakSet[AkkoPersona] = weakref.WeakSet()


def publish_model_lists() -> None:
    """Send the current gateway model list to the model picker of every open chat."""
    for persona in list(_LIVE_PERSONAS):
        persona.publish_model_configuration()


def _error_text(error: openai.APIError, model_id: str) -> str:
    """Return the chat reply for a failed request, with the proxy's message and its advice."""
    detail = error.message
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        nested = body.get("error") if isinstance(body.get("error"), dict) else body
        detail = str(nested.get("message") or detail)
    if isinstance(error, openai.APITimeoutError):
        return (
            f"The model {model_id} did not answer in time. It may still be "
            "loading; try again in a minute."
        )
    if isinstance(error, openai.APIConnectionError):
        return (
            f"The model {model_id} could not be reached, because this Jupyter "
            f"server's model endpoint did not answer ({error}). Restart the "
            "server, then try again."
        )
    status = getattr(error, "status_code", None)
    if status in (400, 404) and "model" in detail.lower():
        served = ", ".join(CATALOG.chat_models) or "none could be listed"
        return (
            f"The model gateway does not serve the model {model_id!r}. Models "
            f"served: {served}. Choose one of them in the chat's model picker. "
            f"(Gateway message: {detail})"
        )
    if status is not None:
        return f"The model {model_id} failed (HTTP {status}): {detail}"
    return f"The model {model_id} failed while answering: {detail}"


class AkkoPersona(BasePersona):
    """Replies to chat messages with the models that the platform's gateway serves."""

    max_history_messages = Int(
        8,
        help="""Maximum number of earlier chat messages sent with each new message.

        Small models (3B to 7B parameters, 4k to 32k tokens of context) answer
        better with a short history. 0 sends only the new message.

        Example: c.AkkoPersona.max_history_messages = 4
        """,
    ).tag(config=True)

    max_history_chars = Int(
        6000,
        help="""Maximum characters of earlier chat messages sent with each new message.

        About 1500 tokens by default (an estimate at 4 characters a token).
        The newest messages are kept, and a message that does not fit is left
        out whole. The new message itself is always sent.
        """,
    ).tag(config=True)

    max_tokens = Int(
        0,
        help="""Maximum tokens of a reply. 0 leaves the limit to the gateway.

        Example: c.AkkoPersona.max_tokens = 1024
        """,
    ).tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reply_stream: openai.AsyncStream | None = None
        _LIVE_PERSONAS.add(self)
        self.publish_model_configuration()

    @property
    def defaults(self) -> PersonaDefaults:
        return PersonaDefaults(
            name="AKKO",
            description=(
                "Answers with the platform's models, through this Jupyter server. "
                "No API key is needed."
            ),
            avatar_path=AVATAR_PATH,
            system_prompt=SYSTEM_PROMPT,
        )

    # ------------------------------------------------------------ model picker

    def publish_model_configuration(self) -> None:
        """Offer the gateway's chat models in the picker, keeping the user's pick."""
        default_chat = current_default_models().chat
        options = [
            ModelOption(
                id=model_id,
                name=model_id,
                description="default" if model_id == default_chat else None,
            )
            for model_id in CATALOG.chat_models
        ]
        # None is the picker's "Default" entry: the spawner's default model.
        self.report_model_configuration(
            ModelConfiguration(current=self.get_model(), options=options)
        )

    async def update_model(self, model_id: str) -> None:
        """Accept the user's pick; `process_message` reads it for each message."""
        if CATALOG.from_gateway and model_id not in CATALOG.chat_models:
            self.log.warning(
                "akko-llm: the chat picked model %r, which the gateway does not "
                "list; its requests will fail until the gateway serves it",
                model_id,
            )

    def selected_model(self) -> str:
        """Return the gateway model id for the next reply: the user's pick, else the default."""
        return self.get_model() or current_default_models().chat

    # ---------------------------------------------------------------- messages

    def _role(self, message: Message) -> str | None:
        if message.sender == self.id:
            return "assistant"
        if message.sender.startswith("jupyter-ai-personas::") or message.sender.startswith(
            "hidden::"
        ):
            return None
        return "user"

    def build_messages(self, message: Message) -> list[dict[str, str]]:
        """Return the request's messages: system prompt, recent history, then ``message``."""
        history: list[dict[str, str]] = []
        budget = max(self.max_history_chars, 0)
        earlier = [
            entry
            for entry in self.chat.get_messages()
            if entry.id != message.id and not entry.deleted and entry.body
        ]
        for entry in reversed(earlier):
            if len(history) >= max(self.max_history_messages, 0):
                break
            role = self._role(entry)
            if role is None:
                continue
            if len(entry.body) > budget:
                break
            budget -= len(entry.body)
            history.insert(0, {"role": role, "content": entry.body})
        return [
            {"role": "system", "content": self.system_prompt},
            *history,
            {"role": "user", "content": message.body},
        ]

    async def _reply_chunks(self, stream: openai.AsyncStream) -> AsyncIterator[str]:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    async def process_message(self, message: Message) -> None:
        model_id = self.selected_model()
        base_url, token = endpoint_credentials()
        # The OpenAI SDK sends "Authorization: Bearer <api_key>", which Jupyter
        # accepts as a token. The proxy reports failures readably, so no retries.
        client = openai.AsyncOpenAI(
            base_url=base_url, api_key=token or "no-token", max_retries=0
        )
        request: dict[str, Any] = {
            "model": model_id,
            "messages": self.build_messages(message),
            "stream": True,
        }
        if self.max_tokens > 0:
            request["max_tokens"] = self.max_tokens
        try:
            self._reply_stream = await client.chat.completions.create(**request)
            await self.stream_message(self._reply_chunks(self._reply_stream))
        except openai.APIError as error:
            self.log.warning("akko-llm: chat reply with %s failed: %s", model_id, error)
            self.send_message(f"**Error:** {_error_text(error, model_id)}")
        finally:
            self._reply_stream = None
            await client.close()

    async def cancel_response(self) -> None:
        """Stop the reply in progress; closing the stream cancels the upstream request."""
        stream = self._reply_stream
        if stream is not None:
            await stream.close()
