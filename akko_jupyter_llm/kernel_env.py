"""The two environment variables that lead code in a kernel to this server's endpoint.

The server extension sets them when the server starts listening; kernels
inherit them:

- ``AKKO_LLM_BASE_URL``: ``http://127.0.0.1:<port>{base_url}akko-llm/v1``;
- ``AKKO_LLM_TOKEN``: this server's token, only when the server is not spawned
  by JupyterHub (there, ``JUPYTERHUB_API_TOKEN`` is already in the environment
  and the server accepts it).

The token is the user's own: it is also in the server's runtime file, readable
by the same Unix user. The gateway key is never set here.

This module imports nothing heavy, because kernels import it.
"""

from __future__ import annotations

import os

KERNEL_BASE_URL_ENV = "AKKO_LLM_BASE_URL"
KERNEL_TOKEN_ENV = "AKKO_LLM_TOKEN"

# Listening addresses that a kernel on the same machine reaches at 127.0.0.1.
_LOOPBACK_REACHABLE = {"", "*", "0.0.0.0", "localhost", "127.0.0.1", "::"}


def kernel_base_url(serverapp) -> str | None:
    """Return the endpoint URL as a kernel on this machine reaches it, or None.

    None when the server listens on a Unix socket.
    """
    # NOTE: a server on a Unix socket (--sock) is not reachable by URL; the
    # OpenAI client would need an httpx transport for the socket.
    if getattr(serverapp, "sock", ""):
        return None
    scheme = "https" if serverapp.certfile else "http"
    ip = serverapp.ip or ""
    if ip in _LOOPBACK_REACHABLE:
        host = "127.0.0.1"
    elif ":" in ip:
        host = f"[{ip}]"
    else:
        host = ip
    base_url = serverapp.base_url.rstrip("/")
    return f"{scheme}://{host}:{serverapp.port}{base_url}/akko-llm/v1"


def server_endpoint(serverapp) -> tuple[str, str] | None:
    """Return ``(base_url, token)`` for code in the server process, or None on a socket.

    The token is the JupyterHub API token under JupyterHub, else the server's own.
    """
    url = kernel_base_url(serverapp)
    if url is None:
        return None
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "").strip() or (
        getattr(serverapp.identity_provider, "token", "") or ""
    )
    return url, token


def kernel_credentials() -> tuple[str, str]:
    """Return ``(base_url, token)`` for code in a kernel, or raise `RuntimeError`."""
    base_url = os.environ.get(KERNEL_BASE_URL_ENV, "").strip()
    if not base_url:
        raise RuntimeError(
            f"{KERNEL_BASE_URL_ENV} is not set, so this code does not run in a "
            "kernel started by a Jupyter server with akko_jupyter_llm enabled. "
            "Check `jupyter server extension list`, restart the server, then "
            "start a new kernel; or set AKKO_LLM_BASE_URL and AKKO_LLM_TOKEN."
        )
    token = (
        os.environ.get("JUPYTERHUB_API_TOKEN", "").strip()
        or os.environ.get(KERNEL_TOKEN_ENV, "").strip()
    )
    return base_url, token
