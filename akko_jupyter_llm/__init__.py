"""akko-jupyter-llm: the platform's language models from Jupyter.

- The server extension `AkkoLLM` (in `akko_jupyter_llm.app`) serves an
  authenticated OpenAI-compatible endpoint at ``{base_url}akko-llm/v1``.
- `openai_client` and `async_openai_client` return OpenAI clients for that
  endpoint, for code in a kernel.
- ``%load_ext akko_jupyter_llm`` loads jupyter-ai's ``%%ai`` magics on the
  platform's models (`akko_jupyter_llm.magics` for jupyter-ai 2.x,
  `akko_jupyter_llm.jupyter_ai3_magics` for 3.x, chosen by what is installed).

Importing this package stays cheap: the server extension and the OpenAI SDK are
imported only when used.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .client import async_openai_client, openai_client

__all__ = ["__version__", "async_openai_client", "openai_client"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import AkkoLLM

    return [{"module": "akko_jupyter_llm", "app": AkkoLLM}]


def load_ipython_extension(ipython) -> None:
    """Run by ``%load_ext akko_jupyter_llm``: the ``%%ai`` magics on the platform's models."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magics import unload_ipython_extension as unload

    unload(ipython)
