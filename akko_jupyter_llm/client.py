"""OpenAI clients for code in a kernel, pointed at this server's ``akko-llm/v1``.

>>> from akko_jupyter_llm import openai_client
>>> client = openai_client()
>>> client.chat.completions.create(model="qwen2.5:3b", messages=[...])

The clients authenticate with the user's own Jupyter or JupyterHub token, never
with the gateway key, which stays on the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .kernel_env import check_kernel_token, kernel_credentials

if TYPE_CHECKING:
    import openai


def openai_client(**kwargs: Any) -> openai.OpenAI:
    """Return an `openai.OpenAI` client for this Jupyter server's model endpoint.

    Keyword arguments go to `openai.OpenAI` (for example ``timeout`` or
    ``max_retries``). Raises `RuntimeError` when the kernel was not started by
    a server with this extension, or has no token for a server that requires
    one (a server with a password and no token) and ``api_key`` is not given.
    """
    import openai

    return openai.OpenAI(**_client_arguments(kwargs))


def async_openai_client(**kwargs: Any) -> openai.AsyncOpenAI:
    """Return an `openai.AsyncOpenAI` client; see `openai_client`."""
    import openai

    return openai.AsyncOpenAI(**_client_arguments(kwargs))


def _client_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Add this server's endpoint and the kernel's token to the client's arguments."""
    base_url, token = kernel_credentials()
    kwargs.setdefault("base_url", base_url)
    if "api_key" not in kwargs:
        # Without a token, the server is asked whether it requires one, so
        # that a password-only server fails here with what to do.
        check_kernel_token(str(kwargs["base_url"]), token)
        # The OpenAI SDK sends "Authorization: Bearer <api_key>", which Jupyter
        # accepts as a token. Without a token (authentication turned off) any
        # placeholder works.
        kwargs["api_key"] = token or "no-token"
    return kwargs
