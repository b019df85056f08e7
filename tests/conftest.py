"""Fixtures: a real Jupyter server with the extension, and real upstreams.

The Jupyter server comes from pytest-jupyter, under its odd default base URL
``/a%40b/`` and with unauthenticated access turned off. ``upstream`` is the
project's own OpenAI-compatible test server (tests/upstreams/openai_compat.py),
running on 127.0.0.1 in the test's event loop. The model servers (llama.cpp,
LiteLLM, the Ollama-native upstream) come from tests/model_fixtures.py.

A test changes the extension's settings with a marker:
``@pytest.mark.akko(max_body_size=1000)``.
"""

from __future__ import annotations

import logging
import os

import aiohttp
import pytest
from yarl import URL

from tests.upstreams.openai_compat import OpenAIUpstream

pytest_plugins = [
    "pytest_jupyter.jupyter_server",
    "tests.model_fixtures",
    "tests.jupyter_ai_fixtures",
    "tests.jupyter_ai3_fixtures",
    "tests.hub_fixtures",
    "tests.fault_fixtures",
    "tests.browser_fixtures",
]

GATEWAY_KEY = "sk-test-gateway-master-key-7f3a9c"


class SecretScan(logging.Handler):
    """Collects every log record of the session that contains the gateway key.

    Attached to the root logger at debug level, it sees what every logger
    propagates, so the whole suite's traffic is checked, not one module's.
    The key reaches the servers through a key file (`gateway_key_file`):
    Jupyter logs the values of its config files at debug level.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not a leak
            return
        if record.exc_text:
            text += record.exc_text
        if GATEWAY_KEY in text:
            self.leaks.append(f"{record.name}: {text[:300]}")


SECRET_SCAN = SecretScan()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "akko(**settings): AkkoLLM settings for the test's Jupyter server"
    )
    logging.getLogger().addHandler(SECRET_SCAN)


def pytest_sessionfinish(session, exitstatus):
    logging.getLogger().removeHandler(SECRET_SCAN)
    if SECRET_SCAN.leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["The gateway key appeared in these log records:", *SECRET_SCAN.leaks]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def gateway_key_file(tmp_path_factory):
    """A key file with the gateway key, as a Kubernetes secret would be mounted."""
    path = tmp_path_factory.mktemp("gateway-key") / "api-key"
    path.write_text(GATEWAY_KEY + "\n")
    return path


def apply_akko_marker(request, settings: dict) -> dict:
    """Update ``settings`` with the test's ``akko`` marker; a marker key replaces the file."""
    marker = request.node.get_closest_marker("akko")
    if marker is not None:
        if "api_key" in marker.kwargs or "api_key_file" in marker.kwargs:
            settings.pop("api_key", None)
            settings.pop("api_key_file", None)
        settings.update(marker.kwargs)
    return settings


@pytest.fixture(autouse=True)
def _restore_akko_environment():
    """Undo the environment variables the extension sets for kernels."""
    saved = {
        name: value for name, value in os.environ.items() if name.startswith("AKKO_LLM_")
    }
    yield
    for name in [name for name in os.environ if name.startswith("AKKO_LLM_")]:
        del os.environ[name]
    os.environ.update(saved)


@pytest.fixture
def upstream(jp_asyncio_loop):
    server = OpenAIUpstream(expected_key=GATEWAY_KEY)
    jp_asyncio_loop.run_until_complete(server.start())
    yield server
    jp_asyncio_loop.run_until_complete(server.stop())


@pytest.fixture
def akko_settings(request, upstream, gateway_key_file) -> dict:
    """The AkkoLLM settings of the test's server: defaults plus the ``akko`` marker."""
    settings = {"upstream_url": upstream.url, "api_key_file": str(gateway_key_file)}
    return apply_akko_marker(request, settings)


@pytest.fixture
def jp_server_config(akko_settings):
    return {
        "ServerApp": {
            # Terminals are not needed, and their extension does not load
            # when unauthenticated access is off.
            "jpserver_extensions": {
                "akko_jupyter_llm": True,
                "jupyter_server_terminals": False,
            },
            "allow_unauthenticated_access": False,
        },
        "AkkoLLM": akko_settings,
    }


class ProxyClient:
    """Requests to the proxy over real HTTP, with the server's token by default."""

    def __init__(self, server_url: str, base_url: str, token: str) -> None:
        self.server_url = server_url
        self.base_url = base_url
        self.token = token
        self.endpoint = f"{server_url}{base_url}akko-llm/v1"
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The client session, created in the running event loop on first use."""
        if self._session is None:
            # Tests that need cookies send them by hand (see test_proxy_basics).
            self._session = aiohttp.ClientSession(
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def url(self, path: str) -> URL:
        # encoded=True keeps the path byte for byte (%40, %2F, dot segments).
        return URL(f"{self.endpoint}/{path}", encoded=True)

    def server_path(self, path: str) -> URL:
        """Return the URL of ``{base_url}<path>`` on the Jupyter server."""
        return URL(f"{self.server_url}{self.base_url}{path}", encoded=True)

    def request(self, method: str, path: str, *, auth: bool = True, headers=None, **kwargs):
        """Return an aiohttp request context for ``akko-llm/v1/<path>``."""
        all_headers = self.auth_headers() if auth else {}
        all_headers.update(headers or {})
        return self.session.request(method, self.url(path), headers=all_headers, **kwargs)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@pytest.fixture
def proxy(jp_serverapp, http_server_client, jp_base_url, jp_http_port, jp_asyncio_loop):
    """A `ProxyClient` for the running test server (its HTTP server is started)."""
    token = jp_serverapp.identity_provider.token
    client = ProxyClient(f"http://127.0.0.1:{jp_http_port}", jp_base_url, token)
    yield client
    jp_asyncio_loop.run_until_complete(client.close())
