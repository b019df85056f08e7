"""Per-user LiteLLM virtual keys, minted and revoked by the Hub with the master key.

- `GatewayKeyClient` calls LiteLLM's key API (``/key/generate``, ``/key/info``,
  ``/key/update``, ``/key/delete``) with the master key.
- `GatewayKeyManager` gives each Hub user one key: it reuses the key it minted
  last while the gateway reports it active (updating its models and limits
  when they changed), and otherwise deletes the user's old keys and mints one.
- `GatewayKeyError` is raised for every failure of the key API. Its message states
  what failed and what to do, and never contains a key.

Run ``python -m akko_jupyter_llm.hub.gateway_keys revoke USER...`` on the Hub
to revoke users' keys; their next spawn mints new ones.

Tornado is imported only when a request is sent (JupyterHub depends on it).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from .options import UserKeys

# Messages of a LiteLLM proxy that runs without a database (LiteLLM 1.108,
# proxy/management_endpoints/key_management_endpoints.py and auth).
_NO_DATABASE_MARKERS = ("database not connected", "no connected db", "no_db_connection")


class GatewayKeyError(RuntimeError):
    """The gateway's key API failed; ``reason`` is a short word for logs and tests.

    ``jupyterhub_message`` is the text JupyterHub shows the user when a spawn
    fails with this error.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.jupyterhub_message = message


def key_hash(key: str) -> str:
    """Return the SHA-256 hex digest that LiteLLM stores for a key."""
    return hashlib.sha256(key.encode()).hexdigest()


class GatewayKeyClient:
    """Calls to one gateway's key API, authenticated with the master key.

    ``master_key`` is a callable, so a key read from a file or an environment
    variable is read at each call and a rotated master key needs no Hub restart.
    """

    def __init__(
        self,
        gateway_url: str,
        master_key: Callable[[], str],
        master_key_source: str,
        request_timeout: float = 10.0,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self._master_key = master_key
        self.master_key_source = master_key_source
        self.request_timeout = request_timeout

    async def generate(self, body: Mapping[str, Any]) -> str:
        """Mint a key with the fields of ``body``; return the key."""
        document = await self._call("POST", "/key/generate", body)
        key = document.get("key") if isinstance(document, dict) else None
        if not isinstance(key, str) or not key:
            raise GatewayKeyError(
                f"The gateway at {self.gateway_url} responded to /key/generate without "
                "a key. Check that it is a LiteLLM proxy and that its version "
                "supports virtual keys.",
                "bad_response",
            )
        return key

    async def info(self, key: str) -> dict[str, Any] | None:
        """Return the gateway's record of ``key``, or None when it does not know it."""
        # LiteLLM accepts the key's hash, which keeps the key out of URLs and logs.
        query = urlencode({"key": key_hash(key)})
        document = await self._call(
            "GET", f"/key/info?{query}", None, not_found_ok=True
        )
        if document is None:
            return None
        info = document.get("info") if isinstance(document, dict) else None
        return info if isinstance(info, dict) else None

    async def update(self, key: str, fields: Mapping[str, Any]) -> None:
        """Change the models and limits of ``key``."""
        await self._call("POST", "/key/update", {"key": key, **fields})

    async def delete_aliases(self, aliases: list[str]) -> list[str]:
        """Delete every key with one of ``aliases``; return the deleted keys' ids."""
        document = await self._call(
            "POST", "/key/delete", {"key_aliases": aliases}, not_found_ok=True
        )
        if not isinstance(document, dict):
            return []
        return list(document.get("deleted_keys") or [])

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        not_found_ok: bool = False,
    ) -> Any:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

        master_key = self._master_key()
        url = self.gateway_url + path
        shown_url = self.gateway_url + path.split("?", 1)[0]
        request = HTTPRequest(
            url,
            method=method,
            headers={
                "Authorization": f"Bearer {master_key}",
                "Content-Type": "application/json",
            },
            body=None if body is None else json.dumps(body),
            connect_timeout=self.request_timeout,
            request_timeout=self.request_timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as error:
            raise self._connection_error(shown_url, error) from None

        if response.code == 599:
            raise self._connection_error(shown_url, response.error)
        text = response.body.decode("utf-8", "replace") if response.body else ""
        text = text.replace(master_key, "[master key]") if master_key else text
        if response.code == 404 and not_found_ok:
            return None
        if response.code >= 400:
            raise self._status_error(method, shown_url, response.code, text)
        try:
            return json.loads(text) if text else {}
        except ValueError:
            raise GatewayKeyError(
                f"The gateway at {shown_url} responded with status {response.code} "
                f"but not with JSON: {text[:200]!r}. Check that "
                f"{self.gateway_url} is the LiteLLM proxy.",
                "bad_response",
            ) from None

    def _connection_error(
        self, url: str, error: BaseException | None
    ) -> GatewayKeyError:
        name = type(error).__name__ if error is not None else "error"
        if name == "HTTPTimeoutError" or "timeout" in str(error).lower():
            return GatewayKeyError(
                f"The gateway did not respond to {url} within {self.request_timeout:g} s "
                "(UserKeys.request_timeout). Check the LiteLLM pod's load and logs, "
                "or raise the timeout.",
                "timeout",
            )
        return GatewayKeyError(
            f"Cannot connect to the gateway at {url}: {error}. Check that the "
            "LiteLLM Service is running and that UserKeys.gateway_url (or "
            "upstream_url) names it.",
            "unreachable",
        )

    def _status_error(
        self, method: str, url: str, code: int, text: str
    ) -> GatewayKeyError:
        lowered = text.lower()
        if any(marker in lowered for marker in _NO_DATABASE_MARKERS):
            return GatewayKeyError(
                f"The gateway at {self.gateway_url} has no database, so it cannot "
                f"manage per-user keys ({method} {url} answered {code}). Give "
                "LiteLLM a database (DATABASE_URL), or turn per-user keys off.",
                "no_database",
            )
        if code in (401, 403):
            return GatewayKeyError(
                f"The gateway at {self.gateway_url} rejected the Hub's master key "
                f"from {self.master_key_source} ({method} {url} answered {code}). "
                "Make it the same value as the gateway's LITELLM_MASTER_KEY; after "
                "a Helm upgrade that generated a new key, update the Hub's secret "
                "and restart the Hub.",
                "master_key_rejected",
            )
        return GatewayKeyError(
            f"The gateway's key API failed: {method} {url} returned {code}: "
            f"{text[:300]}",
            "gateway_error",
        )


class GatewayKeyManager:
    """One LiteLLM virtual key per Hub user, with the limits of `UserKeys`.

    NOTE: the keys minted so far are kept in this process only. After a Hub
    restart each user's next spawn deletes the old key by its alias and mints a
    new one, so servers started before the restart lose their key when that
    user spawns again, which happens only after those servers stopped.
    """

    def __init__(
        self, client: GatewayKeyClient, settings: UserKeys, log: logging.Logger
    ):
        self.client = client
        self.settings = settings
        self.log = log
        self._keys: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def alias(self, username: str) -> str:
        return self.settings.alias_prefix + username

    def key_fields(self, username: str, models: list[str]) -> dict[str, Any]:
        """Return the models, limits and metadata that ``username``'s key gets."""
        settings = self.settings
        fields: dict[str, Any] = {
            "models": models,
            "metadata": {**settings.metadata, "jupyterhub_user": username},
        }
        optional = {
            "max_budget": settings.max_budget,
            "budget_duration": settings.budget_duration,
            "rpm_limit": settings.rpm_limit,
            "tpm_limit": settings.tpm_limit,
            "max_parallel_requests": settings.max_parallel_requests,
        }
        fields.update(
            {name: value for name, value in optional.items() if value is not None}
        )
        return fields

    async def key_for(self, username: str, models: list[str]) -> str:
        """Return an active key for ``username`` that may call ``models``."""
        async with self._locks.setdefault(username, asyncio.Lock()):
            fields = self.key_fields(username, models)
            key = self._keys.get(username)
            if key is not None:
                info = await self.client.info(key)
                if _is_active(info):
                    if _differs(info, fields):
                        await self.client.update(key, fields)
                        self.log.info(
                            "Updated the gateway key of %s (alias %s): models %s",
                            username,
                            self.alias(username),
                            ", ".join(models),
                        )
                    return key
                status = (info or {}).get("status", "not found")
                self.log.info(
                    "The gateway key of %s is %s; minting a new one", username, status
                )
            return await self._mint(username, fields)

    async def revoke(self, username: str) -> list[str]:
        """Delete every key of ``username``; return the ids the gateway deleted."""
        async with self._locks.setdefault(username, asyncio.Lock()):
            self._keys.pop(username, None)
            deleted = await self.client.delete_aliases([self.alias(username)])
            self.log.info(
                "Revoked %d gateway key(s) of %s (alias %s)",
                len(deleted),
                username,
                self.alias(username),
            )
            return deleted

    async def _mint(self, username: str, fields: dict[str, Any]) -> str:
        alias = self.alias(username)
        # LiteLLM requires unique aliases, and old keys must stop working anyway.
        await self.client.delete_aliases([alias])
        body = {**fields, "key_alias": alias}
        if self.settings.key_duration is not None:
            body["duration"] = self.settings.key_duration
        key = await self.client.generate(body)
        self._keys[username] = key
        self.log.info(
            "Minted a gateway key for %s (alias %s): models %s",
            username,
            alias,
            ", ".join(fields["models"]),
        )
        return key


def _is_active(info: Mapping[str, Any] | None) -> bool:
    if info is None or info.get("blocked"):
        return False
    # LiteLLM 1.108 reports "active", "expired", "revoked" or "deleted"; older
    # versions report no status, and a key they return is live.
    return info.get("status", "active") == "active"


def _differs(info: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    for name, value in fields.items():
        current = info.get(name)
        if name == "models":
            if sorted(current or []) != sorted(value):
                return True
        elif name == "metadata":
            current = current or {}
            if any(current.get(key) != item for key, item in value.items()):
                return True
        elif current != value:
            return True
    return False


def read_master_key(env_name: str, file_path: str) -> str:
    """Read the master key from ``file_path``, else from ``env_name`` ('' if unset)."""
    if file_path:
        with open(file_path, encoding="utf-8") as key_file:
            return key_file.read().strip()
    return os.environ.get(env_name, "").strip()


def main(argv: list[str] | None = None) -> int:
    """Revoke users' gateway keys from the command line, with the master key."""
    parser = argparse.ArgumentParser(
        prog="python -m akko_jupyter_llm.hub.gateway_keys",
        description="Revoke the LiteLLM virtual keys that the Hub minted for users. "
        "Their next spawn mints new keys.",
    )
    parser.add_argument("action", choices=["revoke"])
    parser.add_argument("users", nargs="+", metavar="USER", help="Hub user names")
    parser.add_argument(
        "--gateway-url",
        required=True,
        help="root URL of the LiteLLM proxy, such as http://akko-akko-litellm:4000",
    )
    parser.add_argument(
        "--master-key-env",
        default="LITELLM_MASTER_KEY",
        help="environment variable that contains the master key (default %(default)s)",
    )
    parser.add_argument(
        "--master-key-file", default="", help="file that contains the master key"
    )
    parser.add_argument("--alias-prefix", default=UserKeys.alias_prefix)
    arguments = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("akko_jupyter_llm.hub")
    source = arguments.master_key_file or f"${arguments.master_key_env}"
    if not read_master_key(arguments.master_key_env, arguments.master_key_file):
        log.error("No master key in %s; set it or pass --master-key-file.", source)
        return 2
    client = GatewayKeyClient(
        arguments.gateway_url,
        lambda: read_master_key(arguments.master_key_env, arguments.master_key_file),
        source,
    )
    manager = GatewayKeyManager(
        client, UserKeys(alias_prefix=arguments.alias_prefix), log
    )

    async def revoke_all() -> None:
        for username in arguments.users:
            await manager.revoke(username)

    try:
        asyncio.run(revoke_all())
    except GatewayKeyError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
