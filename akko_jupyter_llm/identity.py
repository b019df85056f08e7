"""Telling the gateway which person a request is for.

A LiteLLM gateway tracks spend and applies budgets and rate limits per end
user when requests name one. The proxy names the Jupyter user in two places:

- the ``X-LiteLLM-End-User-Id`` header, which LiteLLM reads before any field
  of the body (LiteLLM's end-user tracking documentation lists the order);
- the OpenAI ``user`` field of the body, which other gateways and model
  servers understand.

A ``user`` value sent by the client is replaced, not trusted: with a shared
gateway key, it would let one user spend under another's name.
"""

from __future__ import annotations

import functools
import getpass
import json
import os

END_USER_HEADER = "X-LiteLLM-End-User-Id"

# Values of c.AkkoLLM.user_identity.
IDENTITY_MODES = ("auto", "on", "off")


def runs_under_jupyterhub() -> bool:
    """Return whether this Jupyter server was spawned by JupyterHub."""
    return bool(os.environ.get("JUPYTERHUB_USER") and os.environ.get("JUPYTERHUB_API_TOKEN"))


def identity_enabled(mode: str) -> bool:
    """Return whether requests name their user, for a ``user_identity`` mode."""
    if mode == "auto":
        return runs_under_jupyterhub()
    return mode == "on"


def fallback_user_name() -> str:
    """Return the name to send when Jupyter's own user name is not a person's.

    A standalone Jupyter server names each token-authenticated request after a
    random anonymous user, so the server's owner is named instead: the Hub user
    when there is one, else the operating-system account.
    """
    hub_user = os.environ.get("JUPYTERHUB_USER", "").strip()
    if hub_user:
        return hub_user
    return _account_name()


@functools.cache
def _account_name() -> str:
    # getpass may read the password database; the account does not change.
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "jupyter"


def with_user_field(body: bytes, payload: dict, user: str) -> bytes:
    """Return ``body`` with its ``user`` field set to ``user``.

    ``payload`` is ``body`` already parsed. When the body has no ``user`` field,
    the field is appended before the closing brace, so the rest of the bytes
    stay as the client sent them; otherwise the body is encoded again.
    """
    if "user" not in payload:
        if not payload:
            return json.dumps({"user": user}).encode()
        end = body.rstrip().rfind(b"}")
        if end > 0:
            field = b',"user":' + json.dumps(user).encode()
            return body[:end] + field + body[end:]
    updated = dict(payload, user=user)
    return json.dumps(updated, ensure_ascii=False, separators=(",", ":")).encode()
