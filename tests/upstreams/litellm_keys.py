"""A test double of a LiteLLM proxy with a database: its key API and its model routes.

A real LiteLLM proxy manages virtual keys only with a database, through Prisma,
whose query engines are downloaded at first use. They cannot be downloaded on
the machines these tests run on, so the per-user key tests use this double. It
follows the request and response shapes of LiteLLM 1.108
(litellm/proxy/management_endpoints/key_management_endpoints.py and the types
in litellm/proxy/_types.py):

- ``POST /key/generate`` takes ``models``, ``key_alias``, ``duration``,
  ``max_budget``, ``budget_duration``, ``rpm_limit``, ``tpm_limit``,
  ``max_parallel_requests`` and ``metadata``, rejects a duplicate alias with
  400, and returns the record with the new ``key``;
- ``GET /key/info?key=<key or its SHA-256>`` returns ``{"key", "info"}`` where
  ``info`` has a ``status`` of "active", "expired" or "deleted", or 404;
- ``POST /key/update`` takes ``key`` and the fields to change;
- ``POST /key/delete`` takes ``keys`` or ``key_aliases`` and returns
  ``deleted_keys``, or 404 when none matched;
- errors use LiteLLM's shape ``{"error": {"message", "type", "param", "code"}}``.

Only the master key may call the key API. The model routes are those of
`OpenAIUpstream`. They accept the master key or an active virtual key, answer
401 for a model the virtual key may not call, and list only the key's models
in ``/v1/models``, as LiteLLM does. ``mode`` breaks the key API on purpose:
"no_database" answers as LiteLLM does without a database, "slow" waits
``slow_seconds`` first.

`ThreadedServer` runs the double in a thread with its own event loop, for tests
whose clients are other processes (JupyterHub and its users' servers).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field

from aiohttp import web

from tests.upstreams.openai_compat import OpenAIUpstream, RecordedRequest

_NO_DATABASE_MESSAGE = (
    "Database not connected. Connect a database to your proxy - "
    "https://docs.litellm.ai/docs/simple_proxy#managing-auth---virtual-keys"
)


def litellm_error(message: str, error_type: str, status: int, param: str = "None"):
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": error_type,
                "param": param,
                "code": str(status),
            }
        },
        status=status,
    )


@dataclass
class LiteLLMKeyDouble(OpenAIUpstream):
    """The double; `url` ends in ``/v1`` and `root_url` is the key API's root."""

    master_key: str = ""
    # Key records by the key's SHA-256, as LiteLLM stores them.
    records: dict[str, dict] = field(default_factory=dict)
    mode: str = "ok"
    slow_seconds: float = 5.0

    @property
    def root_url(self) -> str:
        return self.url.removesuffix("/v1")

    def key_calls(self) -> list[RecordedRequest]:
        """Return the recorded requests to the key API, oldest first."""
        return [
            recorded for recorded in self.requests if recorded.path.startswith("/key/")
        ]

    def record_for_alias(self, alias: str) -> dict | None:
        """Return the live record with ``alias``, or None."""
        for record in self.records.values():
            if record["key_alias"] == alias and record["status"] != "deleted":
                return record
        return None

    # ------------------------------------------------------------------ routing

    async def _answer(self, request: web.Request, recorded: RecordedRequest):
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if recorded.path.startswith("/key/"):
            return await self._key_api(request, recorded, sent)

        if sent == self.master_key:
            return await super()._answer(request, recorded)
        record = self.records.get(hashlib.sha256(sent.encode()).hexdigest())
        if record is None or record["status"] != "active":
            return litellm_error(
                "Authentication Error, Invalid proxy server token passed.",
                "auth_error",
                401,
            )
        if recorded.path == "/v1/models" and request.method == "GET":
            return web.json_response(
                {
                    "object": "list",
                    "data": [
                        {"id": model_id, "object": "model", "owned_by": "test"}
                        for model_id in record["models"]
                    ],
                }
            )
        model = (recorded.json or {}).get("model") if recorded.body else None
        if model is not None and model not in record["models"]:
            return litellm_error(
                f"Authentication Error, key not allowed to access model. This key can "
                f"only access models={record['models']}. Tried to access {model}",
                "key_model_access_denied",
                401,
                "model",
            )
        return await super()._answer(request, recorded)

    async def _key_api(
        self, request: web.Request, recorded: RecordedRequest, sent: str
    ):
        if sent != self.master_key:
            return litellm_error(
                "Authentication Error, Invalid proxy server token passed.",
                "auth_error",
                401,
            )
        if self.mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if self.mode == "no_database":
            return litellm_error(_NO_DATABASE_MESSAGE, "internal_server_error", 500)

        path = recorded.path
        body = recorded.json if recorded.body else {}
        if path == "/key/generate" and request.method == "POST":
            return self._generate(body)
        if path == "/key/info" and request.method == "GET":
            return self._info(request.query.get("key", ""))
        if path == "/key/update" and request.method == "POST":
            return self._update(body)
        if path == "/key/delete" and request.method == "POST":
            return self._delete(body)
        return litellm_error(
            f"Not found: {request.method} {path}", "not_found_error", 404
        )

    def _generate(self, body: dict):
        alias = body.get("key_alias")
        if alias is not None and self.record_for_alias(alias) is not None:
            return litellm_error(
                f"Key with alias '{alias}' already exists. Unique key aliases across "
                "all keys are required.",
                "bad_request_error",
                400,
                "key_alias",
            )
        key = "sk-" + secrets.token_urlsafe(16)
        record = {
            "key_alias": alias,
            "models": list(body.get("models") or []),
            "max_budget": body.get("max_budget"),
            "budget_duration": body.get("budget_duration"),
            "rpm_limit": body.get("rpm_limit"),
            "tpm_limit": body.get("tpm_limit"),
            "max_parallel_requests": body.get("max_parallel_requests"),
            "metadata": dict(body.get("metadata") or {}),
            "duration": body.get("duration"),
            "spend": 0.0,
            "blocked": None,
            "status": "active",
        }
        self.records[hashlib.sha256(key.encode()).hexdigest()] = record
        return web.json_response({**record, "key": key, "token_id": key[-8:]})

    def _find(self, key: str) -> dict | None:
        if key.startswith("sk-"):
            key = hashlib.sha256(key.encode()).hexdigest()
        return self.records.get(key)

    def _info(self, key: str):
        record = self._find(key)
        if record is None:
            return litellm_error(
                "Key not found in database", "not_found_error", 404, "key"
            )
        info = {name: value for name, value in record.items() if name != "duration"}
        return web.json_response({"key": key, "info": info})

    def _update(self, body: dict):
        record = self._find(body.get("key", ""))
        if record is None or record["status"] == "deleted":
            return litellm_error("Key not found", "not_found_error", 404, "key")
        for name, value in body.items():
            if name != "key":
                record[name] = value
        return web.json_response({**record, "key": body["key"]})

    def _delete(self, body: dict):
        keys = set(body.get("keys") or [])
        aliases = set(body.get("key_aliases") or [])
        if not keys and not aliases:
            return litellm_error(
                "At least one of 'keys' or 'key_aliases' must be provided.",
                "bad_request_error",
                422,
            )
        deleted = []
        for hashed, record in self.records.items():
            if record["status"] == "deleted":
                continue
            if (
                record["key_alias"] in aliases
                or hashed in keys
                or any(
                    hashlib.sha256(key.encode()).hexdigest() == hashed for key in keys
                )
            ):
                record["status"] = "deleted"
                deleted.append(hashed)
        if not deleted:
            return litellm_error(
                f"Failed to delete all keys. Keys or aliases not found: "
                f"{json.dumps(sorted(keys | aliases))}",
                "not_found_error",
                404,
                "keys",
            )
        return web.json_response({"deleted_keys": deleted})


class ThreadedServer:
    """Runs an aiohttp test upstream in a daemon thread with its own event loop."""

    def __init__(self, server: OpenAIUpstream) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="test-upstream", daemon=True
        )

    def start(self) -> OpenAIUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(
            timeout=10
        )
        return self.server

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(
            timeout=10
        )
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
