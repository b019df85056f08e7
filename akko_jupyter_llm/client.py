"""OpenAI clients for code in a kernel, pointed at this server's ``akko-llm/v1``.

>>> from akko_jupyter_llm import openai_client
>>> client = openai_client()
>>> client.chat.completions.create(model="qwen2.5:3b", messages=[...])

The clients authenticate with the user's own Jupyter or JupyterHub token, never
with the gateway key, which stays on the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .kernel_env import kernel_credentials

if TYPE_CHECKING:
    import openai


def openai_client(**kwargs: Any) -> openai.OpenAI:
    """Return an `openai.OpenAI` client for this Jupyter server's model endpoint.

    Keyword arguments go to `openai.OpenAI` (for example ``timeout`` or
    ``max_retries``).
    """
    import openai

    base_url, token = kernel_credentials()
    kwargs.setdefault("base_url", base_url)
    # The OpenAI SDK sends "Authorization: Bearer <api_key>", which Jupyter
    # accepts as a token. Without a token (authentication turned off) any
    # placeholder works.
    kwargs.setdefault("api_key", token or "no-token")
    return openai.OpenAI(**kwargs)


def async_openai_client(**kwargs: Any) -> openai.AsyncOpenAI:
    """Return an `openai.AsyncOpenAI` client; see `openai_client`."""
    import openai

    base_url, token = kernel_credentials()
    kwargs.setdefault("base_url", base_url)
    kwargs.setdefault("api_key", token or "no-token")
    return openai.AsyncOpenAI(**kwargs)
