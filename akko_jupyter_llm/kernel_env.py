"""The two environment variables that lead code in a kernel to this server's endpoint.

The server extension sets them when the server starts listening; kernels
inherit them:

- ``AKKO_LLM_BASE_URL``: ``http://127.0.0.1:<port>{base_url}akko-llm/v1``;
- ``AKKO_LLM_TOKEN``: this server's token, only when the server is not spawned
  by JupyterHub (there, ``JUPYTERHUB_API_TOKEN`` is already in the environment
  and the server accepts it).

The token is the user's own: it is also in the server's runtime file, readable
by the same Unix user. The gateway key is never set here.

A server that has a password and no token gives its kernels no token, and code
cannot log in with a password. `check_kernel_token` finds that case by asking
the server, so that a client fails at once with what to do.

This module imports nothing heavy, because kernels import it.
"""

from __future__ import annotations

import os

KERNEL_BASE_URL_ENV = "AKKO_LLM_BASE_URL"
KERNEL_TOKEN_ENV = "AKKO_LLM_TOKEN"

# The endpoint's path under the server's base URL.
ENDPOINT_PATH = "/akko-llm/v1"
# Seconds `server_requires_token` waits for the server's response.
AUTH_CHECK_TIMEOUT_SECONDS = 5.0

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


def server_requires_token(base_url: str) -> bool | None:
    """Return whether the Jupyter server of endpoint ``base_url`` requires credentials.

    Sends one request without credentials to jupyter_server's own ``api/me``
    route, which never contacts the gateway. HTTP 403 means that credentials
    are required, and 200 that authentication is off. Returns None
    when ``base_url`` is not an ``akko-llm/v1`` endpoint or the server sends
    neither response.
    """
    import urllib.error
    import urllib.request

    endpoint = base_url.rstrip("/")
    if not endpoint.endswith(ENDPOINT_PATH):
        return None
    url = endpoint[: -len(ENDPOINT_PATH)] + "/api/me"
    # The server is on this machine, so an HTTP proxy of the environment is skipped.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=AUTH_CHECK_TIMEOUT_SECONDS):
            return False
    except urllib.error.HTTPError as error:
        return True if error.code in (401, 403) else None
    except (OSError, ValueError):
        return None


def check_kernel_token(base_url: str, token: str) -> None:
    """Raise `RuntimeError` when ``token`` is empty and the server requires one.

    Without a token, a client can reach the endpoint only when the server's
    authentication is off. Otherwise every request fails with HTTP 403.
    """
    if token or not server_requires_token(base_url):
        return
    server_url = base_url.rstrip("/")[: -len(ENDPOINT_PATH)] + "/"
    raise RuntimeError(
        f"The Jupyter server at {server_url} requires authentication, but this "
        f"kernel has no token for it: {KERNEL_TOKEN_ENV} is not set. The server "
        "sets it only when it has a token, and a server that has a password alone "
        "has none. Code cannot log in with a password. Give the server a token as "
        "well: restart it with the JUPYTER_TOKEN environment variable (or "
        "c.IdentityProvider.token) set to a random value, then start a new "
        "kernel. `python -c \"import secrets; print(secrets.token_urlsafe(32))\"` "
        "prints one, and the password keeps working in the browser. Or pass "
        "api_key= a token that this server accepts."
    )
