"""The Tornado handler of ``{base_url}akko-llm/v1/...``: the authenticated proxy.

`ProxyHandler` checks, in this order: the Jupyter authentication (and the XSRF
token of cookie-authenticated requests), the route allow-list, the settings,
the body size and the per-user limit. Only then does it forward the request to
the upstream, with the gateway key added and the headers reduced to an
allow-list, and relay the response:

- a ``text/event-stream`` response (or any 2xx response to ``"stream": true``
  that is not JSON) is relayed event by event and flushed as it arrives;
- anything else is read whole and passed on with its status; gateway JSON
  errors pass through unchanged.

`ProxyState` contains what the handler shares across requests: the checked
settings and their problems, the gateway key, the upstream client and the
per-user limiter. The extension app creates one per server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import sys
import time
from dataclasses import dataclass, field

import aiohttp
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError

from .config import ProxySettings, setting_name
from .credentials import GatewayKey, KeyUnavailable
from .errors import ProxyError, host_not_allowed_message
from .identity import END_USER_HEADER, fallback_user_name, with_user_field
from .limits import ConcurrencyLimiter
from .routes import (
    RouteNotAllowed,
    allowed_routes_text,
    has_control_characters,
    match_route,
)
from .upstream import UpstreamClient

# Request headers copied to the upstream; everything else (cookies, the
# client's Authorization, XSRF tokens, ...) stays on this server.
FORWARDED_REQUEST_HEADERS = (
    "Content-Type",
    "Accept",
    "User-Agent",
    "OpenAI-Beta",
    "Idempotency-Key",
)

# Response headers copied back to the client, by name or prefix.
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Retry-After", "X-Request-ID")
FORWARDED_RESPONSE_HEADER_PREFIXES = ("openai-", "x-ratelimit-")

# A client-sent X-Request-ID is reused only when it looks like an id.
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Largest part of an incomplete server-sent event held back before it is sent
# anyway; events are normally a few hundred bytes.
MAX_PENDING_EVENT_BYTES = 1024 * 1024

# The blank lines that end a server-sent event.
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")

# Largest non-stream response body held in memory before it is passed on in
# parts. Chat and embeddings responses are far smaller.
MAX_BUFFERED_BODY = 1024 * 1024

# Largest upstream error body read; a longer one is cut there.
MAX_ERROR_BODY = 1024 * 1024

# Error codes whose ProxyError is logged, with more detail, where it is raised.
_LOGGED_BEFORE_RAISED = (
    "internal_error",
    "upstream_error",
    "upstream_redirect",
    "gateway_key_rejected",
)

# Largest part of an upstream error body kept for the log.
MAX_LOGGED_BODY = 500


@dataclass
class ProxyState:
    """State shared by every proxied request of one Jupyter server."""

    settings: ProxySettings
    problems: list[str]
    key: GatewayKey
    client: UpstreamClient
    limiter: ConcurrencyLimiter
    log: logging.Logger
    # Whether requests name their user to the gateway (see identity.py).
    send_user_identity: bool = False
    stats: dict[str, int] = field(default_factory=lambda: {"requests": 0})


def _complete_events_end(data: bytes, event_stream: bool) -> int:
    """Return the length of the prefix of ``data`` made of complete events.

    Server-sent events end with a blank line (``\\n\\n``, ``\\r\\n\\r\\n`` or
    ``\\r\\r``); other streamed formats (NDJSON) end each record with ``\\n``.
    """
    if not event_stream:
        return data.rfind(b"\n") + 1
    if data.endswith(_EVENT_ENDS):
        # The usual case: the upstream sends whole events.
        return len(data)
    return max(
        data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0,
        data.rfind(b"\r\n\r\n") + 4 if b"\r\n\r\n" in data else 0,
        data.rfind(b"\r\r") + 2 if b"\r\r" in data else 0,
    )


def _reject_constant(name: str) -> None:
    """Reject NaN and Infinity, which Python's json accepts but JSON (RFC 8259) does not."""
    raise ValueError(f"{name} is not a JSON value, so send a number or null")


# One decoder for all requests: json.loads with an argument builds a new one
# for every call.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _writes_debug(log: logging.Logger) -> bool:
    """Return whether a DEBUG record of ``log`` would reach any log handler.

    Jupyter sets its loggers to DEBUG and filters by level in their handlers
    (INFO by default), so ``log.isEnabledFor(DEBUG)`` is true even when no
    debug line is written. Building a record that no handler writes would
    cost a stack walk and a `LogRecord` on every request.
    """
    if not log.isEnabledFor(logging.DEBUG):
        return False
    logger: logging.Logger | None = log
    while logger is not None:
        if any(handler.level <= logging.DEBUG for handler in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def _short_text(body: bytes, limit: int = 200) -> str:
    """Return the start of ``body`` as one line of text, without HTML tags."""
    text = body[: limit * 4].decode("utf-8", errors="replace")
    text = re.sub(r"<[^>]*>", " ", text)
    text = " ".join(text.split())
    return text[:limit]


@web.stream_request_body
class ProxyHandler(ExtensionHandlerMixin, APIHandler):
    """Forward one allowed OpenAI request to the upstream and relay its response."""

    # The resource name for Jupyter's authorizer (``@authorized``-style checks).
    auth_resource = "akko-llm"

    # ------------------------------------------------------------------ setup

    @property
    def state(self) -> ProxyState:
        return self.extensionapp.proxy_state

    def _user_name(self) -> str:
        """Return the authenticated user's name, or 'anonymous' before auth ran."""
        user = getattr(self, "_jupyter_current_user", None)
        if not user:
            return "anonymous"
        return getattr(user, "username", None) or str(user)

    async def prepare(self) -> None:
        self._started = time.perf_counter()
        self._body_chunks: list[bytes] = []
        self._body_size = 0
        self._body_error: ProxyError | None = None
        self._body_over_limit = False
        self._slot_user: str | None = None
        self._forwarding_task: asyncio.Task | None = None
        self._client_gone = False
        self._upstream_status: int | None = None
        self._request_id = self._make_request_id()
        self._early_error: web.HTTPError | None = None
        self.set_header("X-Request-ID", self._request_id)

        try:
            await super().prepare()
            if not self.current_user:
                raise web.HTTPError(403)
            self.route = self._match_route()
            self._check_settings()
            self.api_key = self._read_key()
            self._check_declared_size()
            limit_key = self._limit_key()
            self.state.limiter.acquire(limit_key)
        except web.HTTPError as error:
            if not self._has_body():
                raise
            # Responding before the body is read makes Tornado close the
            # connection under a client that is still sending, which then sees
            # a broken pipe instead of this error. Read and drop the body first.
            self._early_error = error
            return
        self._slot_user = limit_key

    def _hub_user_name(self) -> str | None:
        """Return the JupyterHub user name, or None outside JupyterHub."""
        if type(self.identity_provider).__module__.startswith("jupyterhub"):
            return self._user_name()
        return None

    def _limit_key(self) -> str:
        """Return whose request this is, for the per-user limit.

        Under JupyterHub the user name identifies the person (the server's
        owner, or someone the owner shared it with). A standalone Jupyter
        server gives every token-authenticated request a new random user name,
        but it has a single user, so all its requests count as one.
        """
        return self._hub_user_name() or "server-owner"

    def _has_body(self) -> bool:
        headers = self.request.headers
        length = headers.get("Content-Length", "0")
        return (length.isdigit() and int(length) > 0) or "Transfer-Encoding" in headers

    def _make_request_id(self) -> str:
        sent = self.request.headers.get("X-Request-ID", "")
        if _REQUEST_ID_PATTERN.match(sent):
            return sent
        return secrets.token_hex(16)

    def _match_route(self):
        prefix = self.base_url.rstrip("/") + "/akko-llm/v1/"
        raw_path = self.request.path
        if raw_path == prefix[:-1]:
            raise ProxyError(
                404,
                f"{raw_path} is the base URL for OpenAI clients, not a route. "
                f"Add the route to it, for example {prefix}models. This endpoint "
                f"forwards only: {allowed_routes_text()}.",
                code="route_not_found",
            )
        if not raw_path.startswith(prefix):
            raise ProxyError(
                404,
                "Unknown route. This endpoint forwards only: "
                f"{allowed_routes_text()}.",
                code="route_not_found",
            )
        try:
            return match_route(self.request.method, raw_path[len(prefix) :])
        except RouteNotAllowed as error:
            raise ProxyError(
                404,
                f"Unknown route {self.request.method} akko-llm/v1/"
                f"{raw_path[len(prefix):][:200]!r}: {error}. This endpoint forwards "
                f"only: {allowed_routes_text()}.",
                code="route_not_found",
            ) from None

    def _check_settings(self) -> None:
        problems = list(self.state.problems)
        if problems:
            # Report an unreadable key file too, so that one response lists all.
            try:
                self.state.key.get()
            except KeyUnavailable as error:
                problems.append(str(error))
            numbered = " ".join(
                f"({number}) {problem}" for number, problem in enumerate(problems, 1)
            )
            raise ProxyError(
                503,
                "The LLM proxy of this Jupyter server is misconfigured, so no "
                f"request is forwarded: {numbered} Ask the platform admin to fix "
                "the setting and restart the server.",
                code="proxy_misconfigured",
            )

    def _read_key(self) -> str:
        try:
            return self.state.key.get()
        except KeyUnavailable as error:
            raise ProxyError(
                503,
                f"{error} This is a server configuration problem; ask the "
                "platform admin.",
                code="gateway_key_unavailable",
            ) from None

    def _too_large_error(self, size: int) -> ProxyError:
        limit = self.state.settings.max_body_size
        return ProxyError(
            413,
            f"The request body is {size} bytes, over the limit of {limit} bytes "
            f"set by {setting_name('max_body_size')}. Send less per request, for "
            "example fewer texts per embeddings call.",
            code="request_too_large",
        )

    def _check_declared_size(self) -> None:
        limit = self.state.settings.max_body_size
        declared = self.request.headers.get("Content-Length")
        if limit and declared and declared.isdigit() and int(declared) > limit:
            # The body is still read and dropped, so that the client can read
            # the 413 instead of having its upload cut off.
            self._body_error = self._too_large_error(int(declared))

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if (
            self._body_error is not None
            or self._body_over_limit
            or self._early_error is not None
        ):
            return
        limit = self.state.settings.max_body_size
        if limit and self._body_size > limit:
            # The error is built in post(), once the whole body has been counted.
            self._body_over_limit = True
            self._body_chunks = []
            return
        self._body_chunks.append(chunk)

    # ------------------------------------------------------------- methods

    @web.authenticated
    async def get(self, _path: str) -> None:
        if self._early_error is not None:
            raise self._early_error
        await self._run_proxy(body=None)

    @web.authenticated
    async def post(self, _path: str) -> None:
        if self._finished:
            return
        if self._early_error is not None:
            raise self._early_error
        if self._body_error is not None:
            raise self._body_error
        if self._body_over_limit:
            raise self._too_large_error(self._body_size)
        body = b"".join(self._body_chunks)
        self._body_chunks = []
        self._check_content_type()
        payload = self._check_body(body)
        if self.state.send_user_identity:
            body = with_user_field(body, payload, self._identity())
        await self._run_proxy(body=body, stream=payload.get("stream") is True)

    # The allow-list in prepare() rejects every other method with a 404 before
    # the body is forwarded; they exist so that prepare() sees a method to
    # authenticate. Authentication is checked in prepare(); the stored error is
    # raised here once the body has been read.
    put = patch = delete = post

    def _identity(self) -> str:
        """Return the user name to send to the gateway."""
        return self._hub_user_name() or fallback_user_name()

    def _check_content_type(self) -> None:
        """Reject a body not declared as JSON, with a 400 as the OpenAI API does.

        A gateway may parse a body by its Content-Type (as a form, for example)
        and then see something other than the JSON object checked here.
        """
        content_type = self.request.headers.get("Content-Type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            sent = repr(content_type[:100]) if content_type else "none"
            raise ProxyError(
                400,
                f"The request to {self.route.name} has Content-Type {sent}. Send "
                "the JSON body with the header Content-Type: application/json "
                "(with curl: -H 'Content-Type: application/json').",
                code="invalid_content_type",
            )

    def _check_body(self, body: bytes) -> dict:
        """Check that ``body`` is a JSON object and return it parsed."""
        try:
            # JSON between systems is UTF-8 (RFC 8259); json.loads would also
            # accept UTF-16 and UTF-32, which the gateway may not.
            payload = _JSON_DECODER.decode(body.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ProxyError(
                400,
                f"The request body of {self.route.name} is not valid UTF-8 "
                f"(byte {error.start}). Send JSON encoded as UTF-8.",
                code="invalid_json",
            ) from None
        except ValueError as error:
            raise ProxyError(
                400,
                f"The request body of {self.route.name} is not valid JSON: {error}. "
                "Send a JSON object with Content-Type: application/json.",
                code="invalid_json",
            ) from None
        except RecursionError:
            raise ProxyError(
                400,
                f"The request body of {self.route.name} is nested too deeply to "
                "parse. Send a flatter JSON object.",
                code="invalid_json",
            ) from None
        if not isinstance(payload, dict):
            raise ProxyError(
                400,
                f"The request body of {self.route.name} must be a JSON object, "
                f"not {type(payload).__name__}.",
                code="invalid_body",
            )
        model = payload.get("model")
        if isinstance(model, str) and has_control_characters(model):
            raise ProxyError(
                400,
                f"The model id {model[:100]!r} contains control characters.",
                code="invalid_model",
            )
        return payload

    # ------------------------------------------------------------ forwarding

    async def _run_proxy(self, body: bytes | None, stream: bool = False) -> None:
        """Forward the request; a client that goes away cancels the forwarding.

        `on_connection_close` cancels the task this request runs in while it
        waits for the upstream. The cancellation ends here, so that Tornado
        finishes the request as usual. A separate task per request costs about
        as much CPU as the rest of this handler's own code (measured with
        benchmarks/profile.py).
        """
        task = asyncio.current_task()
        self._forwarding_task = task
        try:
            await self._forward(body, stream)
        except asyncio.CancelledError:
            if not self._client_gone:
                raise
            if sys.version_info >= (3, 11):
                task.uncancel()
            self.log.info(
                "akko-llm %s: client of %s went away; upstream request cancelled",
                self._request_id,
                self._user_name(),
            )
        finally:
            self._forwarding_task = None

    def on_connection_close(self) -> None:
        self._client_gone = True
        task = self._forwarding_task
        if task is not None:
            task.cancel()
        self._release_slot()

    def on_finish(self) -> None:
        self._release_slot()
        if _writes_debug(self.state.log):
            self.state.log.debug(
                "akko-llm %s: %s %s for %s -> %s (upstream %s) in %.1f ms",
                getattr(self, "_request_id", "-"),
                self.request.method,
                getattr(getattr(self, "route", None), "name", "-"),
                self._user_name(),
                self.get_status(),
                getattr(self, "_upstream_status", None),
                (time.perf_counter() - self._started) * 1000,
            )

    def _release_slot(self) -> None:
        user = getattr(self, "_slot_user", None)
        if user is not None:
            self._slot_user = None
            self.state.limiter.release(user)

    def _upstream_headers(self) -> dict[str, str]:
        headers = {
            name: self.request.headers[name]
            for name in FORWARDED_REQUEST_HEADERS
            if name in self.request.headers
        }
        headers["Accept-Encoding"] = "identity"
        headers["X-Request-ID"] = self._request_id
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.state.send_user_identity:
            identity = self._identity()
            # HTTP header values are ASCII; a name outside it travels in the
            # body's user field only.
            if identity.isascii() and identity.isprintable():
                headers[END_USER_HEADER] = identity
        return headers

    async def _forward(self, body: bytes | None, stream: bool) -> None:
        client = self.state.client
        self.state.stats["requests"] += 1
        # The query string is not forwarded: none of the allowed routes needs
        # one, and it may carry the user's Jupyter token (?token=...).
        url = client.url_for(self.route.upstream_path)
        response = await client.open(
            self.request.method, url, self._upstream_headers(), body
        )
        complete = False
        try:
            self._upstream_status = response.status
            content_type = response.headers.get("Content-Type", "")
            event_stream = content_type.startswith("text/event-stream")
            relay_stream = event_stream or (
                stream
                and 200 <= response.status < 300
                and not content_type.startswith("application/json")
            )
            if relay_stream:
                await self._relay_stream(response, content_type, event_stream)
            else:
                await self._relay_body(response, content_type)
            complete = True
        finally:
            if complete:
                response.release()
            else:
                response.close()

    def _copy_response_headers(self, response: aiohttp.ClientResponse) -> None:
        for name, value in response.headers.items():
            lower = name.lower()
            if name.title() in FORWARDED_RESPONSE_HEADERS or lower.startswith(
                FORWARDED_RESPONSE_HEADER_PREFIXES
            ):
                if lower == "x-request-id":
                    continue  # This server's id is already set and logged.
                self.set_header(name, value)

    async def _relay_body(
        self, response: aiohttp.ClientResponse, content_type: str
    ) -> None:
        """Relay a response that is not a stream, with its status."""
        status = response.status
        if 300 <= status < 400:
            raise self._redirect_error(response)
        if status >= 400:
            payload = await self.state.client.read_body(response, MAX_ERROR_BODY)
            # Some gateways quote the key they were sent in their error.
            payload = self._scrub_bytes(payload)
            self._check_upstream_error(status, payload, content_type)
            self.set_status(status, reason=response.reason or None)
            self._copy_response_headers(response)
            self.finish(payload, set_content_type=content_type or "application/json")
            return

        self.set_status(status, reason=response.reason or None)
        self._copy_response_headers(response)
        # A body up to MAX_BUFFERED_BODY goes out in one piece with its length.
        # A larger one is passed on as it arrives, so that it never sits whole
        # in this server's memory.
        buffered = 0
        connection_stream = getattr(self.request.connection, "stream", None)
        try:
            async for chunk in self.state.client.iter_body(response):
                self.write(chunk)
                buffered += len(chunk)
                if buffered >= MAX_BUFFERED_BODY:
                    buffered = 0
                    await self._flush_at_client_pace(connection_stream)
        except ProxyError as error:
            if not self._headers_written:
                raise
            # Finishing now would end the body as if it were complete. Closing
            # the connection instead shows the client that it is cut short.
            self.log.warning(
                "akko-llm %s: response body for %s failed after it started: %s",
                self._request_id,
                self._user_name(),
                error.message,
            )
            self.request.connection.close()
            return
        self.finish(set_content_type=content_type or "application/json")

    async def _flush_at_client_pace(self, connection_stream) -> None:
        """Send what was written, and wait only while the client lags behind.

        Data already in the socket is not waited for, because waiting for the
        flush would cost an event-loop turn per write. A client that reads
        slower than the upstream sends is waited for, so that nothing piles up
        in memory.
        """
        flushed = self.flush()
        if connection_stream is None or connection_stream.writing():
            await flushed

    def _redirect_error(self, response: aiohttp.ClientResponse) -> ProxyError:
        """Explain an upstream redirect, which the proxy does not follow."""
        location = self._scrub(response.headers.get("Location", ""))[:200]
        target = f" to {location!r}" if location else ""
        self.log.warning(
            "akko-llm %s: the gateway %s redirected %s %s%s",
            self._request_id,
            self.state.client.base_url,
            self.request.method,
            self.route.name,
            target,
        )
        return ProxyError(
            502,
            f"The model gateway at {self.state.client.base_url} answered "
            f"{self.request.method} {self.route.name} with a redirect (HTTP "
            f"{response.status}){target}. The proxy does not follow redirects, "
            "because the gateway key would go along. A redirect usually means "
            f"that {setting_name('upstream_url')} uses http:// where the gateway "
            "wants https://, or lacks the /v1 path; ask the platform admin to "
            "set it to the address the redirect names.",
            code="upstream_redirect",
        )

    def _check_upstream_error(self, status: int, payload: bytes, content_type: str) -> None:
        """Translate the upstream errors that are this server's problem; pass the rest."""
        error = None
        if content_type.startswith("application/json"):
            try:
                error = json.loads(payload).get("error")
            except (ValueError, AttributeError, RecursionError):
                error = None

        if status in (401, 403) or (
            # LiteLLM without a database answers a wrong master key with a 400
            # whose error type is "no_db_connection" (seen with LiteLLM 1.108).
            status == 400
            and isinstance(error, dict)
            and "no_db_connection" in (str(error.get("type")), str(error.get("code")))
        ):
            self.state.key.invalidate()
            self.log.warning(
                "akko-llm %s: the gateway %s rejected this server's key (HTTP %s): %s",
                self._request_id,
                self.state.client.base_url,
                status,
                self._scrub(_short_text(payload, MAX_LOGGED_BODY)),
            )
            raise ProxyError(
                502,
                f"The model gateway at {self.state.client.base_url} rejected this "
                f"Jupyter server's gateway key (HTTP {status}). This is not your "
                "fault: the key is configured by the platform, and it comes from "
                f"{self.state.key.describe_source()}. Ask the platform admin to "
                "check that it matches the gateway's master key or a valid "
                "virtual key (a Helm upgrade that regenerated the key often "
                "causes this).",
                code="gateway_key_rejected",
            )

        if error is None:
            # Not an OpenAI-style error body (an ingress' HTML page, an empty
            # body, truncated JSON): wrap it so that clients can show it.
            excerpt = _short_text(payload)
            detail = f": {excerpt!r}" if excerpt else " with an empty body"
            self.log.warning(
                "akko-llm %s: the gateway %s returned HTTP %s without a JSON error%s",
                self._request_id,
                self.state.client.base_url,
                status,
                detail,
            )
            if 400 <= status < 500:
                # A client error without an OpenAI body usually means the
                # upstream has no such route (llama.cpp has no models/{id}).
                raise ProxyError(
                    status,
                    f"The model gateway at {self.state.client.base_url} answered "
                    f"HTTP {status} to {self.request.method} {self.route.name} "
                    f"without an error message{detail}. The upstream may not "
                    f"support this route; check that {setting_name('upstream_url')} "
                    "points at an OpenAI-compatible API ending in /v1.",
                    code="upstream_error",
                )
            raise ProxyError(
                status if status in (500, 502, 503, 504) else 502,
                f"The model gateway at {self.state.client.base_url} answered HTTP "
                f"{status} without an error message{detail}. It may be restarting "
                "or behind a failing ingress; try again in a minute.",
                code="upstream_error",
            )

    def _scrub(self, text: str) -> str:
        """Remove the gateway key from ``text`` before it is logged or shown."""
        if self.api_key:
            text = text.replace(self.api_key, "[secret]")
        return text

    def _scrub_bytes(self, payload: bytes) -> bytes:
        if self.api_key:
            payload = payload.replace(self.api_key.encode(), b"[secret]")
        return payload

    async def _relay_stream(
        self, response: aiohttp.ClientResponse, content_type: str, event_stream: bool
    ) -> None:
        """Relay a stream, flushing every complete event as soon as it arrives."""
        self.set_status(response.status, reason=response.reason or None)
        self._copy_response_headers(response)
        content_type = content_type or "text/event-stream"
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        # Tornado leaves Nagle's algorithm on until finish(), which delays each
        # small event until the client acknowledges the previous one.
        connection_stream = getattr(self.request.connection, "stream", None)
        if connection_stream is not None:
            connection_stream.set_nodelay(True)

        pending = b""
        try:
            async for chunk in self.state.client.iter_body(response):
                if pending:
                    chunk = pending + chunk
                end = _complete_events_end(chunk, event_stream)
                if end == 0 and len(chunk) < MAX_PENDING_EVENT_BYTES:
                    pending = chunk
                    continue
                if end == 0:
                    end = len(chunk)
                pending = chunk[end:]
                self.write(chunk[:end])
                await self._flush_at_client_pace(connection_stream)
            if pending:
                self.write(pending)
        except ProxyError as error:
            if not self._headers_written:
                raise
            # Headers are gone: report the failure as a final event. The
            # incomplete event held in ``pending`` is dropped, so the client
            # never parses half an event.
            self.log.warning(
                "akko-llm %s: stream for %s failed after it started: %s",
                self._request_id,
                self._user_name(),
                error.message,
            )
            self.write(error.to_sse_event())
        except StreamClosedError:
            self._client_gone = True
            return
        try:
            self.finish(set_content_type=content_type)
        except StreamClosedError:
            self._client_gone = True

    # ---------------------------------------------------------------- errors

    def write_error(self, status_code: int, **kwargs) -> None:
        """Write every error as an OpenAI error object, never a traceback."""
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if not isinstance(error, ProxyError):
            error = self._wrap_error(status_code, error)
        self.set_status(error.status)
        # send_error() cleared the headers set so far. The id ties the response
        # to this server's log lines.
        if getattr(self, "_request_id", None):
            self.set_header("X-Request-ID", self._request_id)
        for name, value in error.headers.items():
            self.set_header(name, value)
        if error.status >= 500 and error.code not in _LOGGED_BEFORE_RAISED:
            self.log.warning(
                "akko-llm %s: %s for %s: %s",
                getattr(self, "_request_id", "-"),
                error.status,
                self._user_name(),
                error.message,
            )
        self.finish(error.to_json(), set_content_type="application/json")

    def _wrap_error(self, status_code: int, error: BaseException | None) -> ProxyError:
        detail = getattr(error, "log_message", None) or ""
        if status_code == 403 and "xsrf" in detail.lower():
            return ProxyError(
                403,
                f"The XSRF check failed ({detail}). A browser request that is "
                "authenticated by the Jupyter cookie must send the X-XSRFToken "
                "header (JupyterLab's ServerConnection does this). Scripts and "
                "kernels should send 'Authorization: token <token>' instead.",
                code="xsrf_failed",
            )
        if status_code == 403 and not self.check_host():
            # jupyter_server rejects a Host header it does not know before it
            # authenticates, to stop DNS rebinding (it logs the host as well).
            return ProxyError(
                403,
                host_not_allowed_message(self.request.host) + ".",
                code="host_not_allowed",
            )
        if status_code == 403:
            return ProxyError(
                403,
                "Not authenticated. Send this Jupyter server's token in the "
                "'Authorization: token <token>' (or 'Bearer <token>') header, or "
                "the session cookie with an X-XSRFToken header. In a notebook, "
                "akko_jupyter_llm.openai_client() does this for you, unless the "
                "server has a password and no token: then give it a token as well "
                "(see the user guide, 'On a server with a password').",
                code="not_authenticated",
            )
        if status_code == 404 and not self.check_origin():
            # jupyter_server rejects a cross-origin API request with a 404.
            origin = self.request.headers.get("Origin", "")[:100]
            return ProxyError(
                404,
                f"Cross-origin request from {origin!r} blocked: this Jupyter "
                "server accepts API requests only from its own pages. Send the "
                "request from JupyterLab, or from a script or kernel (without an "
                "Origin header), or ask the admin to allow the origin with "
                "c.ServerApp.allow_origin.",
                code="origin_not_allowed",
            )
        if status_code == 404:
            return ProxyError(404, "Not found.", code="route_not_found")
        if status_code == 405:
            return ProxyError(
                405,
                f"The method {self.request.method} is not allowed. This endpoint "
                f"forwards only: {allowed_routes_text()}.",
                code="method_not_allowed",
            )
        if status_code < 500:
            return ProxyError(
                status_code, detail or "The request was rejected.", code="bad_request"
            )
        self.log.error(
            "akko-llm %s: unexpected error",
            getattr(self, "_request_id", "-"),
            exc_info=error,
        )
        return ProxyError(
            500,
            "The LLM proxy hit an unexpected error; it is logged on the Jupyter "
            f"server with request id {getattr(self, '_request_id', '-')}.",
            code="internal_error",
        )
