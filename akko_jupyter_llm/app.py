"""The Jupyter server extension `AkkoLLM`: its settings and its start-up.

Admins configure it as ``c.AkkoLLM.<setting>`` in a Jupyter config file, as
``--AkkoLLM.<setting>=`` on the command line, or through the environment
variables named in each setting's help (the usual way under JupyterHub, where
the spawner sets them).

At start the extension checks its settings, logs what it will use (never the
key), removes the key from the environment that kernels inherit, and mounts
`ProxyHandler` at ``{base_url}akko-llm/v1/``. Once the server listens, it puts
the endpoint's URL (and, without JupyterHub, this server's token) into the
environment of kernels it starts, for `akko_jupyter_llm.openai_client`.
"""

from __future__ import annotations

import os
import time

from jupyter_server.extension.application import ExtensionApp
from traitlets import Unicode, default

from ._version import __version__
from .config import (
    ENV_VARS,
    LenientBool,
    LenientFloat,
    LenientInt,
    check_settings,
    env_bool,
    env_number,
    redact_url,
)
from .credentials import GatewayKey
from .defaults import read_default_models
from .diagnostics import GatewayDiagnostics
from .handlers import ProxyHandler, ProxyState
from .identity import identity_enabled
from .jupyter_ai3_defaults import JupyterAI3Setup
from .jupyter_ai_defaults import JupyterAISetup
from .kernel_env import KERNEL_BASE_URL_ENV, KERNEL_TOKEN_ENV, server_endpoint
from .limits import ConcurrencyLimiter
from .status_handler import StatusHandler, StatusService
from .upstream import UpstreamClient

DEFAULT_UPSTREAM_URL = "http://127.0.0.1:11434/v1"


class AkkoLLM(ExtensionApp):
    """An OpenAI-compatible endpoint in each Jupyter server, in front of the gateway."""

    name = "akko_jupyter_llm"
    description = __doc__

    upstream_url = Unicode(
        help=f"""URL of the OpenAI-compatible API to forward to, ending in /v1.

        In AKKO this is the LiteLLM gateway's Service, for example
        http://akko-akko-litellm:4000/v1. The default, {DEFAULT_UPSTREAM_URL},
        is Ollama's own OpenAI-compatible API on the same machine.
        Default from the environment variable AKKO_LLM_UPSTREAM_URL.

        Example: c.AkkoLLM.upstream_url = "http://akko-akko-litellm:4000/v1"
        """,
    ).tag(config=True)

    api_key = Unicode(
        help="""Key sent to the upstream as 'Authorization: Bearer <key>'.

        The LiteLLM master key or a virtual key; empty for an upstream that needs
        none (Ollama). Users never see it: it is not in any response, log line
        or kernel environment. Ignored when api_key_file is set.
        Prefer the environment variable or api_key_file over a config file: at
        debug level, Jupyter logs every value set in its config files.
        Default from the environment variable AKKO_LLM_API_KEY, which is then
        removed from the environment that kernels inherit.
        """,
    ).tag(config=True)

    api_key_file = Unicode(
        help="""Path of a file that contains the upstream key (a mounted secret).

        The file is read again when it changes, so a rotated key needs no
        restart. Takes precedence over api_key. Empty means no file.
        Default from the environment variable AKKO_LLM_API_KEY_FILE.

        Example: c.AkkoLLM.api_key_file = "/etc/akko-llm/api-key"
        """,
    ).tag(config=True)

    connect_timeout = LenientFloat(
        help="""Seconds to wait for a connection to the upstream to open.

        Default 10. From the environment variable AKKO_LLM_CONNECT_TIMEOUT.
        """,
    ).tag(config=True)

    first_byte_timeout = LenientFloat(
        help="""Seconds to wait from sending a request to the upstream's first response byte.

        Generous by default (600, ten minutes) because a model that is not yet
        loaded can take minutes to load on CPU before it responds.
        From the environment variable AKKO_LLM_FIRST_BYTE_TIMEOUT.
        """,
    ).tag(config=True)

    idle_timeout = LenientFloat(
        help="""Seconds to wait between two chunks of a response before giving up.

        A stream that keeps sending within this time runs as long as it needs:
        there is no total timeout. Default 120.
        From the environment variable AKKO_LLM_IDLE_TIMEOUT.
        """,
    ).tag(config=True)

    max_body_size = LenientInt(
        help="""Largest request body forwarded, in bytes; larger ones get a 413.

        0 means no limit of this extension's own. Default 16777216 (16 MiB).
        From the environment variable AKKO_LLM_MAX_BODY_SIZE.
        """,
    ).tag(config=True)

    max_concurrent_requests = LenientInt(
        help="""Requests one user may have in progress at once; more get a 429.

        Each further request gets HTTP 429 with a Retry-After header. 0 means no
        limit. Default 16.
        From the environment variable AKKO_LLM_MAX_CONCURRENT_REQUESTS.
        """,
    ).tag(config=True)

    user_identity = Unicode(
        help="""Whether requests tell the gateway which user they are for: auto, on or off.

        When on, the proxy sets the OpenAI 'user' field of each request body and
        LiteLLM's X-LiteLLM-End-User-Id header to the JupyterHub user name, so the
        gateway's spend tracking, budgets and rate limits work per person. A
        'user' value sent by the client is replaced. 'auto' (the default) means
        on when the server was spawned by JupyterHub.
        Default from the environment variable AKKO_LLM_USER_IDENTITY.
        """,
    ).tag(config=True)

    ca_bundle = Unicode(
        help="""Path of a PEM file with the CA certificates that sign an https upstream.

        For a gateway whose certificate comes from an in-cluster CA, mount that
        CA's certificate (a ConfigMap or secret) and name the file here. It
        replaces the system's CAs for the upstream. Empty (the default) means
        the system's CAs. Ignored when verify_tls is off.
        Default from the environment variable AKKO_LLM_CA_BUNDLE.

        Example: c.AkkoLLM.ca_bundle = "/etc/akko-llm/ca.crt"
        """,
    ).tag(config=True)

    verify_tls = LenientBool(
        help="""Whether the certificate of an https upstream is verified.

        On by default. Turning it off lets anyone who can intercept the
        connection read the gateway key, so the server logs a warning at start;
        prefer ca_bundle for a private CA. Default from the environment variable
        AKKO_LLM_VERIFY_TLS (true or false).

        Example: c.AkkoLLM.verify_tls = False
        """,
    ).tag(config=True)

    # Problems found while reading environment variables, reported at start.
    _env_problems: dict[str, str]

    def __init__(self, *args, **kwargs) -> None:
        self._env_problems = {}
        super().__init__(*args, **kwargs)

    @default("upstream_url")
    def _default_upstream_url(self) -> str:
        return os.environ.get(ENV_VARS["upstream_url"], "").strip() or DEFAULT_UPSTREAM_URL

    @default("api_key")
    def _default_api_key(self) -> str:
        return os.environ.get(ENV_VARS["api_key"], "")

    @default("api_key_file")
    def _default_api_key_file(self) -> str:
        return os.environ.get(ENV_VARS["api_key_file"], "")

    @default("user_identity")
    def _default_user_identity(self) -> str:
        return os.environ.get(ENV_VARS["user_identity"], "").strip().lower() or "auto"

    @default("ca_bundle")
    def _default_ca_bundle(self) -> str:
        return os.environ.get(ENV_VARS["ca_bundle"], "").strip()

    @default("verify_tls")
    def _default_verify_tls(self) -> bool:
        return env_bool("verify_tls", True, self._env_problems)

    @default("connect_timeout")
    def _default_connect_timeout(self) -> float:
        return env_number("connect_timeout", 10.0, float, self._env_problems)

    @default("first_byte_timeout")
    def _default_first_byte_timeout(self) -> float:
        return env_number("first_byte_timeout", 600.0, float, self._env_problems)

    @default("idle_timeout")
    def _default_idle_timeout(self) -> float:
        return env_number("idle_timeout", 120.0, float, self._env_problems)

    @default("max_body_size")
    def _default_max_body_size(self) -> int:
        return env_number("max_body_size", 16 * 1024 * 1024, int, self._env_problems)

    @default("max_concurrent_requests")
    def _default_max_concurrent_requests(self) -> int:
        return env_number("max_concurrent_requests", 16, int, self._env_problems)

    # ----------------------------------------------------------------- start

    def initialize_settings(self) -> None:
        started = time.perf_counter()
        settings, problems = check_settings(self, self._env_problems)

        key = GatewayKey(self.api_key, self.api_key_file, self.log)
        # Kernels inherit this server's environment: the key must not be in it.
        os.environ.pop(ENV_VARS["api_key"], None)
        if self.api_key_file.strip() and self.api_key.strip():
            self.log.warning(
                "Both c.AkkoLLM.api_key and c.AkkoLLM.api_key_file are set; "
                "using the file %s",
                self.api_key_file,
            )
        if key.from_file:
            # Read once now, so that an unreadable file is logged at start.
            try:
                key.get()
            except Exception as error:  # noqa: BLE001 - already logged by GatewayKey
                self.log.debug("Gateway key file not readable at start: %s", error)

        self.proxy_state = ProxyState(
            settings=settings,
            problems=problems,
            key=key,
            client=UpstreamClient(settings, self.log),
            limiter=ConcurrencyLimiter(max(settings.max_concurrent_requests, 0)),
            log=self.log,
            send_user_identity=identity_enabled(settings.user_identity),
        )
        self.status_service = StatusService(
            GatewayDiagnostics(
                settings, key, read_default_models(), self.log, problems=problems
            ),
            self.log,
        )

        for problem in problems:
            self.log.error("akko-llm is misconfigured: %s", problem)
        if not settings.verify_tls:
            self.log.warning(
                "akko-llm: TLS certificate verification of the upstream %s is off "
                "(c.AkkoLLM.verify_tls, AKKO_LLM_VERIFY_TLS), so anyone who can "
                "intercept that connection can read the gateway key. Set "
                "c.AkkoLLM.ca_bundle to the gateway's CA instead.",
                redact_url(settings.upstream_url),
            )
        elif settings.ca_bundle:
            self.log.info(
                "akko-llm: verifying the upstream's certificate against %s",
                settings.ca_bundle,
            )
        if problems:
            # The settings in effect are stand-ins; logging them would mislead.
            self.log.error(
                "akko-llm %s: %sakko-llm/v1 answers HTTP 503 until the %d "
                "'misconfigured' problems above are fixed and the server is restarted",
                __version__,
                self.serverapp.base_url,
                len(problems),
            )
        else:
            body_limit = (
                f"max body {settings.max_body_size} bytes"
                if settings.max_body_size > 0
                else "no body size limit"
            )
            request_limit = (
                f"max {settings.max_concurrent_requests} requests per user"
                if settings.max_concurrent_requests > 0
                else "no per-user request limit"
            )
            self.log.info(
                "akko-llm %s: proxying %sakko-llm/v1 to %s (key from %s; timeouts: "
                "connect %gs, first byte %gs, idle %gs; %s; %s) in %.1f ms",
                __version__,
                self.serverapp.base_url,
                redact_url(settings.upstream_url),
                key.describe_source(),
                settings.connect_timeout,
                settings.first_byte_timeout,
                settings.idle_timeout,
                body_limit,
                request_limit,
                (time.perf_counter() - started) * 1000,
            )
        # jupyter-ai's default models; None when jupyter-ai is not enabled.
        self.jupyter_ai = JupyterAISetup.link(self)
        # jupyter-ai 3.x's default persona and models; None without jupyter-ai 3.
        self.jupyter_ai3 = JupyterAI3Setup.link(self)
        # The port is known only once the server listens, after extensions load.
        self.serverapp.io_loop.add_callback(self._set_kernel_environment)

    def _set_kernel_environment(self) -> None:
        """Tell kernels started from now on where the endpoint is and how to log in."""
        endpoint = server_endpoint(self.serverapp)
        if endpoint is None:
            return
        url, token = endpoint
        os.environ[KERNEL_BASE_URL_ENV] = url
        # Under JupyterHub, kernels already have JUPYTERHUB_API_TOKEN.
        if token and not os.environ.get("JUPYTERHUB_API_TOKEN"):
            os.environ[KERNEL_TOKEN_ENV] = token
        self.log.debug("akko-llm: kernels reach the endpoint at %s", url)
        if self.jupyter_ai is not None:
            self.jupyter_ai.start()
        if self.jupyter_ai3 is not None:
            self.jupyter_ai3.start()

    def initialize_handlers(self) -> None:
        # Also /akko-llm/v1 itself, so that a client that sends a request to
        # the base URL gets a JSON error that explains it.
        self.handlers.append((r"/akko-llm/v1(?:/(.*))?", ProxyHandler))
        self.handlers.append((r"/akko-llm/status", StatusHandler))

    async def stop_extension(self) -> None:
        state = getattr(self, "proxy_state", None)
        if state is not None:
            await state.client.close()
        if getattr(self, "jupyter_ai", None) is not None:
            await self.jupyter_ai.stop()
        if getattr(self, "jupyter_ai3", None) is not None:
            await self.jupyter_ai3.stop()
        status_service = getattr(self, "status_service", None)
        if status_service is not None:
            await status_service.close()
