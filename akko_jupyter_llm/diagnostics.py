"""Checks of the model gateway, shared by the status endpoint and ``akko-llm doctor``.

`GatewayDiagnostics.run` sends the gateway a few requests, with the gateway key,
and returns a `Report` of named checks, in this order:

- ``settings_valid``: the upstream URL and timeouts are usable;
- ``gateway_reachable``: ``GET {upstream}/models`` gets an HTTP response;
- ``key_accepted``: that response is not a rejection of the key;
- ``models_served``: the model list, with chat and embedding models apart;
- ``default_chat_model``, ``default_embeddings_model``,
  ``default_completions_model``: the defaults of `defaults.py` are served;
- ``live_test`` (opt-in): one short streamed chat completion, timed.

The first three checks share one request. Each check has a status (``ok``,
``warn``, ``error``, or ``skipped`` when a check it depends on failed), the
time it took in ms, a message, and a hint when it is not ok.

The key is only sent to the gateway: it is never part of a report, and text
that the gateway returns is scrubbed of it before it is shown. LiteLLM's
``/model/info`` (an admin route that tells embedding models apart) is called
here, on the server side, and only the model names and modes are kept.

This module needs only aiohttp and the standard library (through `upstream`),
so the command-line tool runs it without a Jupyter server.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .config import ProxySettings, check_upstream_url, redact_url, setting_name
from .credentials import GatewayKey, KeyUnavailable
from .defaults import DefaultModels, default_model_env
from .errors import ProxyError
from .model_catalog import is_embedding_model
from .upstream import UpstreamClient

OK = "ok"
WARN = "warn"
ERROR = "error"
SKIPPED = "skipped"
_SEVERITY = {SKIPPED: 0, OK: 0, WARN: 1, ERROR: 2}

# Seconds each check waits for the gateway. Short on purpose: the status
# endpoint must respond quickly, even when the proxy's own limits are generous.
CHECK_TIMEOUT_SECONDS = 10.0
# Seconds the live test waits for its first token: a model that Ollama has not
# loaded yet takes a minute or more to load on CPU.
LIVE_FIRST_TOKEN_TIMEOUT_SECONDS = 120.0

LIVE_PROMPT = "Reply with a short greeting."
LIVE_MAX_TOKENS = 32

# Below these the live test calls the model slow. Ollama on a few CPU cores
# generates roughly 5 to 15 tokens/s with a 3B model (an estimate, not a
# measurement of this package).
SLOW_TOKENS_PER_SECOND = 5.0
SLOW_FIRST_TOKEN_SECONDS = 10.0

# A reply that is complete within this many seconds is too quick to tell
# whether something on the way buffers the stream.
MIN_DELIVERY_SECONDS = 0.3
# Chunks came all at once when one network read carried at least this share
# of them. An unbuffered stream arrives in about one read per chunk (32 reads
# for 32 chunks through LiteLLM 1.108 in the tests), a buffered one in one read
# or a few large ones. Time alone cannot tell them apart: a model that is slow
# to start and fast to generate also sends its chunks close together.
BUFFERED_SHARE_IN_ONE_READ = 0.5

# Largest part of a gateway response quoted in a message.
MAX_EXCERPT_CHARS = 200

# Hint for a gateway on another host that refuses, resets or times out a
# connection, or responds with a 5xx (as an ingress in front of a failing pod
# does).
_KUBERNETES_HINT = (
    "If the gateway runs in Kubernetes, look at its pod with `kubectl get pods`: "
    "a pod in CrashLoopBackOff was often OOMKilled (see `kubectl describe pod`), and "
    "LiteLLM needs a memory limit of at least 1 GiB."
)

# Hint for a settings problem in the status endpoint's report. ``akko-llm``
# passes its own, because it reads its values anew at each run.
SERVER_SETTINGS_HINT = (
    "Fix the setting named above, then restart the Jupyter server: it reads its "
    "settings only when it starts."
)

# ProxyError codes of a connection that was refused, reset or timed out.
# ``upstream_unreachable`` also covers a failed DNS lookup, which
# `_is_connection_failure` excludes.
_CONNECTION_FAILURE_CODES = frozenset(
    {"upstream_unreachable", "upstream_disconnected", "upstream_timeout"}
)


def is_loopback_url(url: str) -> bool:
    """Return whether the host of ``url`` is ``localhost`` or a loopback address."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_connection_failure(error: ProxyError) -> bool:
    """Return whether ``error`` is a refused, reset or timed-out connection."""
    if error.code not in _CONNECTION_FAILURE_CODES:
        return False
    # UpstreamClient raises its errors from aiohttp's, so the cause
    # distinguishes a failed DNS lookup from a failed connection.
    return not isinstance(error.__cause__, aiohttp.ClientConnectorDNSError)


@dataclass
class CheckResult:
    """The outcome of one named check."""

    name: str
    title: str
    status: str
    ms: float
    message: str
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        result = {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "ms": round(self.ms, 1),
            "message": self.message,
            "hint": self.hint,
        }
        if self.details:
            result["details"] = self.details
        return result


@dataclass(frozen=True)
class ServedModel:
    """A model id the gateway serves, with its kind: ``chat`` or ``embedding``.

    ``kind_source`` is ``model_info`` when LiteLLM's ``/model/info`` gave the
    mode, or ``name`` when the kind was guessed from the id.
    """

    id: str
    kind: str
    kind_source: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "kind": self.kind, "kind_source": self.kind_source}


@dataclass
class Report:
    """The checks of one run, with what they were run against (never the key)."""

    upstream_url: str
    key_source: str
    default_models: DefaultModels
    checks: list[CheckResult] = field(default_factory=list)
    models: list[ServedModel] = field(default_factory=list)
    checked_at: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        worst = max((_SEVERITY[check.status] for check in self.checks), default=0)
        return {0: OK, 1: WARN, 2: ERROR}[worst]

    def check(self, name: str) -> CheckResult | None:
        return next((check for check in self.checks if check.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "upstream_url": redact_url(self.upstream_url),
            "key_source": self.key_source,
            "default_models": self.default_models.as_dict(),
            "models": [model.as_dict() for model in self.models],
            "checks": [check.as_dict() for check in self.checks],
            "checked_at": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.checked_at)
            ),
        }


@dataclass
class _GatewayResponse:
    """One gateway response, read whole."""

    status: int
    payload: bytes
    content_type: str
    ms: float

    def json(self) -> Any:
        if not self.content_type.startswith("application/json"):
            return None
        try:
            return json.loads(self.payload)
        except (ValueError, UnicodeDecodeError):
            return None

    def error_object(self) -> dict | None:
        document = self.json()
        if isinstance(document, dict) and isinstance(document.get("error"), dict):
            return document["error"]
        return None


class _CheckFailed(Exception):
    """A request of a check failed: ``message`` names the failure, ``hint`` the fix."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def is_key_rejection(status: int, error: dict | None) -> bool:
    """Return whether a gateway response means that it rejected the key.

    LiteLLM 1.108 without a database answers a wrong master key with a 400
    whose error type is ``no_db_connection``, not with a 401.
    """
    if status in (401, 403):
        return True
    if status == 400 and isinstance(error, dict):
        return "no_db_connection" in (str(error.get("type")), str(error.get("code")))
    return False


def model_kind_from_name(model_id: str) -> str:
    """Guess a model's kind from its id, as the jupyter-ai providers do."""
    return "embedding" if is_embedding_model({"id": model_id}) else "chat"


def same_model(served_id: str, expected_id: str) -> bool:
    """Return whether two ids name the same model.

    Ollama lists a model pulled without a tag with ``:latest``.
    """

    def normalise(model_id: str) -> str:
        return model_id[: -len(":latest")] if model_id.endswith(":latest") else model_id

    return normalise(served_id) == normalise(expected_id)


class GatewayDiagnostics:
    """Runs the checks against one gateway, with its own pooled client.

    ``key`` supplies the gateway key, and ``key_source`` describes where it
    comes from, for hints. ``problems`` are the settings problems found at
    start, reported by ``settings_valid`` with ``settings_hint``.

    Messages and hints name settings as the server's admin writes them
    (`config.setting_name`). ``akko-llm`` replaces those names with its own
    flags and variables (see `cli.setting_names`).
    """

    def __init__(
        self,
        settings: ProxySettings,
        key: GatewayKey,
        default_models: DefaultModels,
        log: logging.Logger,
        *,
        key_source: str | None = None,
        problems: list[str] | None = None,
        timeout: float = CHECK_TIMEOUT_SECONDS,
        live_timeout: float = LIVE_FIRST_TOKEN_TIMEOUT_SECONDS,
        settings_hint: str = SERVER_SETTINGS_HINT,
    ) -> None:
        self.key = key
        self.key_source = key_source or key.describe_source()
        self.default_models = default_models
        self.log = log
        self.url_setting = setting_name("upstream_url")
        self.problems = list(problems or [])
        self.timeout = timeout
        self.live_timeout = max(live_timeout, timeout)
        self.upstream_url = settings.upstream_url
        self.settings_hint = settings_hint
        self._loopback = is_loopback_url(settings.upstream_url)
        self._client = UpstreamClient(
            dataclasses.replace(
                settings,
                connect_timeout=min(settings.connect_timeout, timeout),
                first_byte_timeout=timeout,
                idle_timeout=timeout,
            ),
            log,
        )
        self._live_client = UpstreamClient(
            dataclasses.replace(
                settings,
                connect_timeout=min(settings.connect_timeout, timeout),
                first_byte_timeout=self.live_timeout,
                idle_timeout=self.live_timeout,
            ),
            log,
        )
        self._current_key = ""

    async def close(self) -> None:
        await self._client.close()
        await self._live_client.close()

    # ------------------------------------------------------------------ run

    async def run(self, live: bool = False) -> Report:
        """Run every check (the live test only when ``live``) and return the report."""
        report = Report(
            upstream_url=self.upstream_url,
            key_source=self.key_source,
            default_models=self.default_models,
        )
        report.checks.append(self._check_settings())
        if report.checks[-1].status == ERROR:
            self._skip_rest(report, "settings_valid", live)
            return report

        key_error = self._read_key()
        reachable, answer = await self._check_reachable()
        report.checks.append(reachable)
        if answer is None or reachable.status == ERROR:
            self._skip_rest(report, "gateway_reachable", live)
            return report

        key_check = self._check_key(answer, key_error)
        report.checks.append(key_check)
        if key_check.status == ERROR:
            self._skip_rest(report, "key_accepted", live)
            return report

        models_check, models = await self._check_models(answer)
        report.checks.append(models_check)
        report.models = models
        if models_check.status == ERROR:
            self._skip_rest(report, "models_served", live)
            return report

        for kind in ("chat", "embeddings", "completions"):
            report.checks.append(self._check_default(kind, models))
        if live:
            report.checks.append(await self.run_live_test(models))
        return report

    def _skip_rest(self, report: Report, failed: str, live: bool) -> None:
        names = [
            ("gateway_reachable", "Gateway reachable"),
            ("key_accepted", "Gateway key accepted"),
            ("models_served", "Models served"),
            ("default_chat_model", "Default chat model served"),
            ("default_embeddings_model", "Default embeddings model served"),
            ("default_completions_model", "Default completions model served"),
        ]
        if live:
            names.append(("live_test", "Live test"))
        done = {check.name for check in report.checks}
        for name, title in names:
            if name not in done:
                report.checks.append(
                    CheckResult(
                        name,
                        title,
                        SKIPPED,
                        0.0,
                        f"Not run because the check {failed} failed.",
                    )
                )

    def _read_key(self) -> str | None:
        """Read the key into ``_current_key``; return the problem, or None."""
        try:
            self._current_key = self.key.get()
        except KeyUnavailable as error:
            self._current_key = ""
            return str(error)
        return None

    def _scrub(self, text: str) -> str:
        if self._current_key:
            text = text.replace(self._current_key, "[secret]")
        return text

    def _excerpt(self, payload: bytes) -> str:
        text = payload[: MAX_EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
        text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
        return self._scrub(text[:MAX_EXCERPT_CHARS])

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if self._current_key:
            headers["Authorization"] = f"Bearer {self._current_key}"
        return headers

    async def _request(
        self, method: str, path: str, body: bytes | None = None
    ) -> _GatewayResponse:
        """Send one request and read its response, or raise `_CheckFailed`."""
        client = self._client
        started = time.perf_counter()
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await client.open(method, client.url_for(path), headers, body)
            try:
                payload = await client.read_body(response)
            finally:
                response.release()
        except ProxyError as error:
            hint = self._connection_hint(error)
            if error.code == "upstream_timeout":
                raise _CheckFailed(
                    f"The model gateway at {redact_url(self.upstream_url)} did not "
                    f"answer {method} {path} within {self.timeout:g} s.",
                    hint,
                ) from None
            raise _CheckFailed(self._scrub(error.message), hint) from None
        return _GatewayResponse(
            status=response.status,
            payload=payload,
            content_type=response.headers.get("Content-Type", ""),
            ms=(time.perf_counter() - started) * 1000,
        )

    def _connection_hint(self, error: ProxyError) -> str | None:
        """Return the hint for a failed request, or None when its message names the fix.

        The messages of TLS, DNS and malformed-HTTP failures already name what
        to check. A refused, reset or timed-out connection gets a hint for a
        model server on this machine or for a gateway in Kubernetes.
        """
        if not _is_connection_failure(error):
            return None
        timed_out = error.code == "upstream_timeout"
        if self._loopback:
            if timed_out:
                return (
                    "The model server on this machine accepts connections but "
                    "does not answer: it may be busy or still loading a model. "
                    "Its log says which."
                )
            return (
                "Check that the model server on this machine is running (for "
                "example `ollama serve`) and listens on the port in the URL."
            )
        if timed_out:
            return (
                "The gateway or its model server may be overloaded or restarting. "
                + _KUBERNETES_HINT
            )
        return _KUBERNETES_HINT

    # --------------------------------------------------------------- checks

    def _check_settings(self) -> CheckResult:
        started = time.perf_counter()
        problems = list(self.problems)
        url_problem = check_upstream_url(self.upstream_url)
        if url_problem and url_problem not in problems:
            problems.append(url_problem)
        ms = (time.perf_counter() - started) * 1000
        if problems:
            return CheckResult(
                "settings_valid",
                "Settings valid",
                ERROR,
                ms,
                " ".join(problems),
                self.settings_hint,
            )
        return CheckResult(
            "settings_valid",
            "Settings valid",
            OK,
            ms,
            f"Upstream URL {redact_url(self.upstream_url)}; "
            f"key from {self.key_source}.",
        )

    async def _check_reachable(
        self,
    ) -> tuple[CheckResult, _GatewayResponse | None]:
        name, title = "gateway_reachable", "Gateway reachable"
        url = redact_url(self.upstream_url)
        started = time.perf_counter()
        try:
            answer = await self._request("GET", "models")
        except _CheckFailed as failure:
            ms = (time.perf_counter() - started) * 1000
            hint = f"The URL comes from {self.url_setting}. {failure.hint or ''}"
            hint = hint.strip()
            return CheckResult(name, title, ERROR, ms, failure.message, hint), None

        if answer.status >= 500:
            excerpt = self._excerpt(answer.payload)
            detail = f": {excerpt!r}" if excerpt else " with an empty body"
            if self._loopback:
                hint = "The model server on this machine is failing. Its log says why."
            else:
                hint = (
                    "The gateway or an ingress in front of it is failing. "
                    + _KUBERNETES_HINT
                )
            return (
                CheckResult(
                    name,
                    title,
                    ERROR,
                    answer.ms,
                    f"The model gateway at {url} answered GET models with HTTP "
                    f"{answer.status}{detail}.",
                    hint,
                ),
                answer,
            )
        return (
            CheckResult(
                name, title, OK, answer.ms, f"The gateway at {url} answered in "
                f"{answer.ms:.0f} ms."
            ),
            answer,
        )

    def _check_key(
        self, answer: _GatewayResponse, key_error: str | None
    ) -> CheckResult:
        name, title = "key_accepted", "Gateway key accepted"
        url = redact_url(self.upstream_url)
        if key_error is not None:
            return CheckResult(
                name,
                title,
                ERROR,
                0.0,
                key_error,
                "The check sent no key, so it could not test whether the gateway "
                "accepts it. Fix the key as the message says, then check again.",
            )

        if is_key_rejection(answer.status, answer.error_object()):
            self.key.invalidate()
            reason = self._excerpt(answer.payload)
            if not self._current_key:
                return CheckResult(
                    name,
                    title,
                    ERROR,
                    answer.ms,
                    f"The model gateway at {url} requires a key, and none is "
                    f"configured (HTTP {answer.status}: {reason!r}).",
                    "Configure the gateway key; this check found it in "
                    f"{self.key_source}. In a terminal or kernel of a Jupyter "
                    "server, AKKO_LLM_API_KEY is removed from the environment, so "
                    "use the server's own check (GET akko-llm/status, or the "
                    "status item in JupyterLab) or pass --api-key-file.",
                )
            return CheckResult(
                name,
                title,
                ERROR,
                answer.ms,
                f"The model gateway at {url} rejected the configured key "
                f"(HTTP {answer.status}: {reason!r}).",
                "The key does not match the gateway's master key or a valid "
                "virtual key; a Helm upgrade that regenerated the master key "
                "often causes this. This is a platform setting, not the user's "
                f"fault. The key is read from {self.key_source}: update that "
                "secret to the gateway's current key.",
            )

        if answer.status >= 400:
            return CheckResult(
                name,
                title,
                SKIPPED,
                answer.ms,
                f"Not determined: the gateway answered GET models with HTTP "
                f"{answer.status}, which is not about the key.",
            )
        if not self._current_key:
            message = "The gateway responded without a key (none is configured)."
        else:
            message = "The gateway accepted the configured key."
        return CheckResult(name, title, OK, answer.ms, message)

    async def _check_models(
        self, answer: _GatewayResponse
    ) -> tuple[CheckResult, list[ServedModel]]:
        name, title = "models_served", "Models served"
        url = redact_url(self.upstream_url)
        started = time.perf_counter()
        document = answer.json()
        entries = document.get("data") if isinstance(document, dict) else None
        if answer.status >= 400 or not isinstance(entries, list):
            excerpt = self._excerpt(answer.payload)
            return (
                CheckResult(
                    name,
                    title,
                    ERROR,
                    answer.ms,
                    f"GET {url}/models answered HTTP {answer.status} without a "
                    f"model list: {excerpt!r}.",
                    f"The URL must be the OpenAI-compatible API, ending in /v1 "
                    f"(for example http://akko-akko-litellm:4000/v1); it comes "
                    f"from {self.url_setting}.",
                ),
                [],
            )

        ids = [
            entry["id"]
            for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("id"), str)
        ]
        modes = await self._model_modes()
        models = []
        for model_id in ids:
            mode = modes.get(model_id)
            if mode:
                kind = "embedding" if mode == "embedding" else "chat"
                if mode not in ("embedding", "chat", "completion"):
                    kind = mode
                models.append(ServedModel(model_id, kind, "model_info"))
            else:
                kind = model_kind_from_name(model_id)
                models.append(ServedModel(model_id, kind, "name"))
        ms = answer.ms + (time.perf_counter() - started) * 1000

        chat = [model.id for model in models if model.kind == "chat"]
        embedding = [model.id for model in models if model.kind == "embedding"]
        details = {"chat": chat, "embedding": embedding}
        if not models:
            return (
                CheckResult(
                    name,
                    title,
                    ERROR,
                    ms,
                    f"The gateway at {url} serves no model.",
                    "Add models to the gateway's model_list. If it routes to "
                    "Ollama, pull them there (`ollama pull qwen2.5:3b`); a pull "
                    "that is still running shows no model yet.",
                    details,
                ),
                models,
            )
        return (
            CheckResult(
                name,
                title,
                OK,
                ms,
                f"{len(chat)} chat model(s): {', '.join(chat) or 'none'}; "
                f"{len(embedding)} embedding model(s): "
                f"{', '.join(embedding) or 'none'}.",
                details=details,
            ),
            models,
        )

    async def _model_modes(self) -> dict[str, str]:
        """Return LiteLLM's ``model_info.mode`` of each model name, or {} elsewhere.

        ``/model/info`` is a LiteLLM admin route: its answer also contains the
        deployments' settings (their keys included), so only the names and
        modes are kept, and nothing of it leaves this function.
        """
        try:
            answer = await self._request("GET", "model/info")
        except _CheckFailed as failure:
            self.log.debug("akko-llm diagnostics: no /model/info: %s", failure.message)
            return {}
        document = answer.json()
        if answer.status != 200 or not isinstance(document, dict):
            return {}
        modes = {}
        for entry in document.get("data") or []:
            if not isinstance(entry, dict):
                continue
            model_name = entry.get("model_name")
            info = entry.get("model_info")
            mode = info.get("mode") if isinstance(info, dict) else None
            if isinstance(model_name, str) and isinstance(mode, str) and mode:
                modes[model_name] = mode
        return modes

    def _check_default(self, kind: str, models: list[ServedModel]) -> CheckResult:
        name = f"default_{kind}_model"
        title = f"Default {kind} model served"
        expected_id = getattr(self.default_models, kind)
        variable = default_model_env(kind)
        if os.environ.get(variable, "").strip():
            env = variable
        else:
            env = f"the built-in default; {variable} changes it"
        started = time.perf_counter()
        served = next(
            (model for model in models if same_model(model.id, expected_id)), None
        )
        ms = (time.perf_counter() - started) * 1000
        details = {"model": expected_id, "environment_variable": variable}

        if served is None:
            # Without a chat model the chat sidebar and %%ai fail; the others
            # only disable embeddings and inline completion.
            status = ERROR if kind == "chat" else WARN
            served_ids = ", ".join(model.id for model in models)
            return CheckResult(
                name,
                title,
                status,
                ms,
                f"The default {kind} model {expected_id!r} (from {env}) is not served. "
                f"Served: {served_ids}.",
                "If the gateway routes to Ollama, it may still be pulling the "
                "model (`ollama list` shows it when the pull is done). Otherwise "
                f"add it to the gateway, or set {env} to one of the served models.",
                details,
            )

        expected_kind = "embedding" if kind == "embeddings" else "chat"
        if served.kind != expected_kind and served.kind_source == "model_info":
            return CheckResult(
                name,
                title,
                WARN,
                ms,
                f"The default {kind} model {expected_id!r} (from {env}) is served, but "
                f"the gateway lists it as a {served.kind} model.",
                f"Set {env} to a {expected_kind} model, or fix the model's "
                "model_info.mode in the gateway's config.",
                details,
            )
        return CheckResult(
            name, title, OK, ms, f"{served.id} is served (from {env}).", details=details
        )

    # ------------------------------------------------------------ live test

    async def run_live_test(self, models: list[ServedModel]) -> CheckResult:
        """Stream one short chat completion and time it."""
        name, title = "live_test", "Live test"
        chat_models = [model.id for model in models if model.kind == "chat"]
        model_id = next(
            (m for m in chat_models if same_model(m, self.default_models.chat)),
            chat_models[0] if chat_models else None,
        )
        if model_id is None:
            return CheckResult(
                name, title, SKIPPED, 0.0, "Not run: no chat model is served."
            )
        if self._read_key() is not None:
            return CheckResult(
                name, title, SKIPPED, 0.0, "Not run: the gateway key is unavailable."
            )

        body = json.dumps(
            {
                "model": model_id,
                "messages": [{"role": "user", "content": LIVE_PROMPT}],
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": LIVE_MAX_TOKENS,
                "temperature": 0,
            }
        ).encode()
        started = time.perf_counter()
        try:
            stream = await self._read_stream(body, started)
        except _CheckFailed as failure:
            ms = (time.perf_counter() - started) * 1000
            details = {"model": model_id}
            return CheckResult(
                name, title, ERROR, ms, failure.message, failure.hint, details
            )
        return stream.result(name, title, model_id)

    async def _read_stream(self, body: bytes, started: float) -> _StreamTiming:
        client = self._live_client
        headers = self._headers()
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "text/event-stream"
        timing = _StreamTiming(started)
        try:
            response = await client.open(
                "POST", client.url_for("chat/completions"), headers, body
            )
        except ProxyError as error:
            message = self._scrub(error.message)
            if error.code == "upstream_timeout":
                message = (
                    f"No answer to the live test from {redact_url(self.upstream_url)} "
                    f"within {self.live_timeout:g} s."
                )
            raise _CheckFailed(message, _slow_hint()) from None

        try:
            content_type = response.headers.get("Content-Type", "")
            event_stream = content_type.startswith("text/event-stream")
            if response.status >= 400 or not event_stream:
                payload = await client.read_body(response)
                timing.reject(response.status, content_type, self._excerpt(payload))
                return timing
            buffer = b""
            async for chunk in client.iter_body(response):
                timing.reads += 1
                buffer = (buffer + chunk).replace(b"\r\n", b"\n")
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    timing.add_event(event, self._scrub)
        except ProxyError as error:
            if error.code == "upstream_timeout":
                # The live test has its own limit, not c.AkkoLLM.idle_timeout.
                message = (
                    f"The live test stream from {redact_url(self.upstream_url)} "
                    f"stopped: nothing arrived for {self.live_timeout:g} s."
                )
            else:
                message = (
                    f"The live test stream from {redact_url(self.upstream_url)} "
                    f"failed: {self._scrub(error.message)}"
                )
            raise _CheckFailed(message, _slow_hint()) from None
        finally:
            response.close()
        return timing


def _slow_hint() -> str:
    return (
        "The model server probably runs on CPU: a smaller model (qwen2.5:3b "
        "instead of a 7B one) or a GPU backend answers faster. A model that is "
        "not loaded yet also takes long to answer the first time."
    )


_BUFFERED_HINT = (
    "All chunks arrived at once, so a proxy or ingress between this machine and "
    "the model server buffers the stream and users see no text until the end. "
    "Turn buffering off there (nginx: `proxy_buffering off;` or the ingress "
    "annotation nginx.ingress.kubernetes.io/proxy-buffering: \"off\")."
)


class _StreamTiming:
    """Arrival times of the content chunks of one streamed completion."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.reads = 0
        self.content_times: list[float] = []
        # Number of content chunks that each network read carried.
        self.chunks_per_read: dict[int, int] = {}
        self.usage_tokens: int | None = None
        self.error: str | None = None
        self.rejected: tuple[int, str, str] | None = None

    def reject(self, status: int, content_type: str, excerpt: str) -> None:
        self.rejected = (status, content_type, excerpt)

    def add_event(self, event: bytes, scrub) -> None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[len(b"data:") :].strip()
            if data == b"[DONE]":
                return
            try:
                chunk = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else error
                self.error = scrub(str(message))[:MAX_EXCERPT_CHARS]
                continue
            usage = chunk.get("usage")
            tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
            if isinstance(tokens, int):
                self.usage_tokens = tokens
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict) and delta.get("content"):
                    self.content_times.append(time.perf_counter())
                    self.chunks_per_read[self.reads] = (
                        self.chunks_per_read.get(self.reads, 0) + 1
                    )

    def result(self, name: str, title: str, model_id: str) -> CheckResult:
        ms = (time.perf_counter() - self.started) * 1000
        details: dict[str, Any] = {"model": model_id}
        if self.rejected is not None:
            status, content_type, excerpt = self.rejected
            if status >= 400:
                message = (
                    f"The live test with {model_id} failed: HTTP {status}: {excerpt!r}."
                )
                hint = (
                    "The gateway could not run the model. Its log, and the model "
                    "server's, say why."
                )
            else:
                message = (
                    "The gateway answered a streamed request with "
                    f"{content_type or 'no content type'} instead of text/event-stream."
                )
                hint = (
                    "The gateway or a proxy on the way does not stream; check its "
                    "settings."
                )
            return CheckResult(name, title, ERROR, ms, message, hint, details)
        if self.error is not None:
            return CheckResult(
                name,
                title,
                ERROR,
                ms,
                f"The live test stream with {model_id} reported an error: {self.error}",
                "The gateway's log, and the model server's, say why.",
                details,
            )
        if not self.content_times:
            return CheckResult(
                name,
                title,
                ERROR,
                ms,
                f"The live test stream with {model_id} ended without any text.",
                "Try the model in the chat; the gateway's log may say why it "
                "returned nothing.",
                details,
            )

        first_token = self.content_times[0] - self.started
        last_token = self.content_times[-1] - self.started
        span = last_token - first_token
        tokens = self.usage_tokens or len(self.content_times)
        delivery = self._delivery(last_token)
        tokens_per_second = None
        if delivery == "spread" and tokens > 1 and span > 0:
            tokens_per_second = (tokens - 1) / span
        elif last_token > 0:
            # Buffered or too quick to measure: a lower bound over the whole reply.
            tokens_per_second = tokens / last_token
        details.update(
            {
                "time_to_first_token_ms": round(first_token * 1000, 1),
                "tokens": tokens,
                "tokens_per_second": (
                    None if tokens_per_second is None else round(tokens_per_second, 1)
                ),
                "chunks": len(self.content_times),
                "delivery": delivery,
                "network_reads": len(self.chunks_per_read),
            }
        )

        summary = (
            f"{model_id}: first token after {first_token * 1000:.0f} ms, "
            f"{tokens} tokens"
        )
        if tokens_per_second is not None:
            summary += f" at {tokens_per_second:.1f} tokens/s"
        summary += f", chunks {_DELIVERY_WORDS[delivery]}."
        if delivery == "all_at_once":
            return CheckResult(name, title, WARN, ms, summary, _BUFFERED_HINT, details)
        slow = first_token > SLOW_FIRST_TOKEN_SECONDS or (
            tokens_per_second is not None and tokens_per_second < SLOW_TOKENS_PER_SECOND
        )
        if slow:
            summary += " This is slow."
            return CheckResult(name, title, WARN, ms, summary, _slow_hint(), details)
        return CheckResult(name, title, OK, ms, summary, details=details)

    def _delivery(self, last_token: float) -> str:
        chunks = len(self.content_times)
        if chunks < 3 or last_token < MIN_DELIVERY_SECONDS:
            return "undetermined"
        if max(self.chunks_per_read.values()) >= BUFFERED_SHARE_IN_ONE_READ * chunks:
            return "all_at_once"
        return "spread"


_DELIVERY_WORDS = {
    "spread": "spread out as they were generated",
    "all_at_once": "all at once",
    "undetermined": "too few or too quick to tell whether they were buffered",
}
