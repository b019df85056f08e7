"""The status endpoint akko-llm/status against the test upstream.

The upstream here is a `ScriptedUpstream`, so that a test can set how it
answers the diagnostics' own requests (the ``upstream`` fixture of conftest is
replaced for this module).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from akko_jupyter_llm import status_handler
from akko_jupyter_llm.config import ProxySettings
from akko_jupyter_llm.credentials import GatewayKey
from akko_jupyter_llm.defaults import read_default_models
from akko_jupyter_llm.diagnostics import GatewayDiagnostics
from tests.conftest import GATEWAY_KEY
from tests.diagnostics_fixtures import ScriptedUpstream, closed_port
from tests.test_proxy_basics import _cookie_header, _login_cookies

CLOSED_PORT = closed_port()


@pytest.fixture
def upstream(jp_asyncio_loop):
    server = ScriptedUpstream(expected_key=GATEWAY_KEY)
    jp_asyncio_loop.run_until_complete(server.start())
    yield server
    jp_asyncio_loop.run_until_complete(server.stop())


async def get_status(proxy, *, auth: bool = True, query: str = ""):
    headers = proxy.auth_headers() if auth else {}
    url = proxy.server_path("akko-llm/status" + query)
    async with proxy.session.get(url, headers=headers) as response:
        return response.status, await response.json()


async def post_status(proxy):
    async with proxy.session.post(
        proxy.server_path("akko-llm/status"), headers=proxy.auth_headers()
    ) as response:
        return response.status, dict(response.headers), await response.json()


def checks_of(document: dict) -> dict[str, dict]:
    return {check["name"]: check for check in document["checks"]}


async def test_status_healthy_gateway(proxy, upstream, caplog):
    status, document = await get_status(proxy)
    checks = checks_of(document)

    assert status == 200
    assert document["status"] == "ok"
    assert [check["status"] for check in document["checks"]] == ["ok"] * 7
    assert list(checks) == [
        "settings_valid",
        "gateway_reachable",
        "key_accepted",
        "models_served",
        "default_chat_model",
        "default_embeddings_model",
        "default_completions_model",
    ]
    assert all(isinstance(check["ms"], float) for check in document["checks"])
    assert document["endpoint"] == f"{proxy.server_url}{proxy.base_url}akko-llm/v1"
    assert document["upstream_url"] == upstream.url
    assert document["default_models"] == {
        "chat": "qwen2.5:3b",
        "embeddings": "nomic-embed-text",
        "completions": "qwen2.5-coder:7b",
    }
    assert checks["models_served"]["details"] == {
        "chat": ["qwen2.5:3b", "qwen2.5-coder:7b"],
        "embedding": ["nomic-embed-text"],
    }
    assert GATEWAY_KEY not in str(document)
    assert GATEWAY_KEY not in caplog.text


async def test_status_sends_key_to_gateway(proxy, upstream):
    await get_status(proxy)

    models_requests = [r for r in upstream.requests if r.path == "/v1/models"]
    assert len(models_requests) == 1
    assert models_requests[0].headers["Authorization"] == f"Bearer {GATEWAY_KEY}"
    # The test upstream answers /model/info with something that is not a model
    # list, so the kinds come from the names.
    assert upstream.count("GET", "/v1/model/info") == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_status_needs_authentication(proxy, upstream, method, caplog):
    url = proxy.server_path("akko-llm/status")
    async with proxy.session.request(method, url) as response:
        status = response.status
        content_type = response.headers["Content-Type"]
        document = await response.json()

    assert status == 403
    assert content_type.startswith("application/json")
    assert document["reason"] == "not_authenticated"
    assert document["message"].startswith("Not authenticated: ")
    assert "'Authorization: token <token>'" in document["message"]
    assert "log in again" in document["message"]
    assert "checks" not in document
    assert upstream.requests == []
    assert f"akko-llm status: {method} " in caplog.text
    assert "rejected with 403 not_authenticated" in caplog.text


async def test_status_cookie_post_needs_xsrf(proxy, upstream):
    cookies = await _login_cookies(proxy)
    url = proxy.server_path("akko-llm/status")
    headers = {"Cookie": _cookie_header(cookies)}
    async with proxy.session.post(url, headers=headers) as response:
        status = response.status
        document = await response.json()
    headers["X-XSRFToken"] = cookies["_xsrf"]
    async with proxy.session.post(url, headers=headers) as response:
        status_with_xsrf = response.status

    assert status == 403
    assert document["reason"] == "xsrf_failed"
    assert document["message"].startswith("The XSRF check failed (")
    assert "X-XSRFToken" in document["message"]
    assert status_with_xsrf == 200


@pytest.mark.akko(upstream_url=f"http://127.0.0.1:{CLOSED_PORT}/v1")
async def test_status_refused_gateway(proxy):
    status, document = await get_status(proxy)
    checks = checks_of(document)
    reachable = checks["gateway_reachable"]

    assert status == 200
    assert document["status"] == "error"
    assert reachable["status"] == "error"
    assert f"http://127.0.0.1:{CLOSED_PORT}/v1" in reachable["message"]
    assert "c.AkkoLLM.upstream_url" in reachable["hint"]
    # The address is this machine's, so the hint is about a local model server.
    assert "model server on this machine is running" in reachable["hint"]
    assert "CrashLoopBackOff" not in reachable["hint"]
    assert checks["key_accepted"]["status"] == "skipped"
    assert checks["default_chat_model"]["status"] == "skipped"


@pytest.mark.akko(api_key="sk-wrong-key-1234")
async def test_status_wrong_key(proxy, upstream):
    status, document = await get_status(proxy)
    checks = checks_of(document)
    key = checks["key_accepted"]

    assert status == 200
    assert document["status"] == "error"
    assert checks["gateway_reachable"]["status"] == "ok"
    assert key["status"] == "error"
    assert "rejected the configured key" in key["message"]
    assert "Helm upgrade" in key["hint"]
    assert "c.AkkoLLM.api_key" in key["hint"]
    assert "sk-wrong-key-1234" not in str(document)
    assert checks["models_served"]["status"] == "skipped"


@pytest.mark.akko(api_key_file="/nonexistent/akko-llm/api-key")
async def test_status_unreadable_key_file(proxy):
    status, document = await get_status(proxy)
    key = checks_of(document)["key_accepted"]

    assert status == 200
    assert key["status"] == "error"
    assert "/nonexistent/akko-llm/api-key" in key["message"]
    assert "(c.AkkoLLM.api_key_file, AKKO_LLM_API_KEY_FILE)" in key["message"]


async def test_status_missing_default_model(proxy, upstream):
    upstream.models = [
        {"id": "llama3.2:1b", "object": "model"},
        {"id": "nomic-embed-text:latest", "object": "model"},
    ]

    status, document = await get_status(proxy)
    checks = checks_of(document)
    chat = checks["default_chat_model"]
    completions = checks["default_completions_model"]

    assert status == 200
    assert document["status"] == "error"
    assert chat["status"] == "error"
    assert "'qwen2.5:3b'" in chat["message"]
    assert "JUPYTER_AI_DEFAULT_MODEL" in chat["message"]
    assert "llama3.2:1b, nomic-embed-text:latest" in chat["message"]
    assert "still be pulling" in chat["hint"]
    assert completions["status"] == "warn"
    # Ollama lists a bare name with ":latest".
    assert checks["default_embeddings_model"]["status"] == "ok"


@pytest.fixture
def custom_defaults(monkeypatch):
    monkeypatch.setenv("JUPYTER_AI_DEFAULT_MODEL", "akko:qwen2.5-coder:7b")
    monkeypatch.setenv("AKKO_LLM_EMBEDDINGS_MODEL", "  ")
    monkeypatch.setenv("AKKO_LLM_COMPLETIONS_MODEL", "qwen2.5:3b")


async def test_status_reads_default_models(custom_defaults, proxy):
    status, document = await get_status(proxy)

    assert status == 200
    assert document["default_models"] == {
        "chat": "qwen2.5-coder:7b",
        "embeddings": "nomic-embed-text",
        "completions": "qwen2.5:3b",
    }
    assert document["status"] == "ok"


async def test_status_gateway_error_page(proxy, upstream):
    # An ingress in front of a stopped gateway answers 503 with an HTML page.
    upstream.models_answer = (503, "<html><h1>Service Unavailable</h1></html>")

    status, document = await get_status(proxy)
    checks = checks_of(document)
    reachable = checks["gateway_reachable"]

    assert status == 200
    assert reachable["status"] == "error"
    assert "HTTP 503" in reachable["message"]
    assert "Service Unavailable" in reachable["message"]
    assert "<h1>" not in reachable["message"]
    assert "model server on this machine is failing" in reachable["hint"]
    assert "kubectl" not in reachable["hint"]
    assert checks["key_accepted"]["status"] == "skipped"


@pytest.mark.akko(upstream_url="ftp://127.0.0.1/v1")
async def test_status_invalid_url_hint(proxy):
    status, document = await get_status(proxy)
    settings = checks_of(document)["settings_valid"]

    assert status == 200
    assert settings["status"] == "error"
    assert settings["message"].startswith(
        "c.AkkoLLM.upstream_url (AKKO_LLM_UPSTREAM_URL) must start with"
    )
    assert "restart the Jupyter server" in settings["hint"]


async def test_status_wrong_path(proxy, upstream):
    upstream.models_answer = (404, "404 page not found")

    status, document = await get_status(proxy)
    checks = checks_of(document)
    models = checks["models_served"]

    assert status == 200
    assert checks["gateway_reachable"]["status"] == "ok"
    assert checks["key_accepted"]["status"] == "skipped"
    assert models["status"] == "error"
    assert "HTTP 404" in models["message"]
    assert "ending in /v1" in models["hint"]


# Cache


async def test_status_cached_within_window(proxy, upstream):
    first_status, first = await get_status(proxy)
    second_status, second = await get_status(proxy)

    assert first_status == second_status == 200
    assert first["cached"] is False
    assert second["cached"] is True
    assert upstream.count("GET", "/v1/models") == 1


async def test_status_concurrent_requests_share_run(proxy, upstream):
    upstream.models_delay = 0.3

    results = await asyncio.gather(*(get_status(proxy) for _ in range(5)))

    assert [status for status, _ in results] == [200] * 5
    assert upstream.count("GET", "/v1/models") == 1
    assert sorted(document["cached"] for _, document in results) == [False] + [True] * 4


async def test_status_cache_expires(proxy, upstream, monkeypatch):
    monkeypatch.setattr(status_handler, "CACHE_SECONDS", 0.2)

    await get_status(proxy)
    await asyncio.sleep(0.3)
    _, document = await get_status(proxy)

    assert document["cached"] is False
    assert upstream.count("GET", "/v1/models") == 2


async def test_status_get_rejects_live(proxy):
    status, document = await get_status(proxy, query="?live=1")

    assert status == 400
    assert "POST" in document["message"]


# Live test


async def test_live_spread_stream(proxy, upstream):
    upstream.control = {"chunks": 6, "gap": 0.1}

    status, _, document = await post_status(proxy)
    live = checks_of(document)["live_test"]

    assert status == 200
    assert live["status"] == "ok"
    assert live["details"]["delivery"] == "spread"
    assert live["details"]["chunks"] == 6
    assert live["details"]["model"] == "qwen2.5:3b"
    assert live["details"]["time_to_first_token_ms"] < 300
    assert live["details"]["tokens_per_second"] > 5
    assert document["cached"] is False
    stream_requests = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert len(stream_requests) == 1
    assert stream_requests[0].json["stream"] is True
    assert stream_requests[0].headers["Authorization"] == f"Bearer {GATEWAY_KEY}"


async def test_live_all_at_once(proxy, upstream):
    # Everything after one long wait, as behind a buffering proxy.
    upstream.control = {"delay": 0.6, "chunks": 8, "gap": 0}

    status, _, document = await post_status(proxy)
    live = checks_of(document)["live_test"]

    assert status == 200
    assert document["status"] == "warn"
    assert live["status"] == "warn"
    assert live["details"]["delivery"] == "all_at_once"
    assert live["details"]["time_to_first_token_ms"] >= 600
    assert "buffers the stream" in live["hint"]


async def test_live_slow_model(proxy, upstream):
    upstream.control = {"chunks": 4, "gap": 0.4}

    status, _, document = await post_status(proxy)
    live = checks_of(document)["live_test"]

    assert status == 200
    assert live["status"] == "warn"
    assert live["details"]["delivery"] == "spread"
    assert live["details"]["tokens_per_second"] < 5
    assert "CPU" in live["hint"]
    assert "GPU" in live["hint"]


async def test_live_gateway_error(proxy, upstream):
    upstream.control = {
        "status": 500,
        "error": {"message": "model runner crashed", "type": "server_error"},
    }

    status, _, document = await post_status(proxy)
    live = checks_of(document)["live_test"]

    assert status == 200
    assert live["status"] == "error"
    assert "HTTP 500" in live["message"]
    assert "model runner crashed" in live["message"]


async def test_live_stream_error_event(proxy, upstream):
    upstream.control = {"chunks": 5, "fail_after": 2}

    status, _, document = await post_status(proxy)
    live = checks_of(document)["live_test"]

    assert status == 200
    assert live["status"] == "error"
    assert upstream.url in live["message"]


async def test_live_one_at_a_time(proxy, upstream):
    upstream.control = {"chunks": 4, "gap": 0.3}

    first = asyncio.ensure_future(post_status(proxy))
    await asyncio.sleep(0.3)
    second_status, second_headers, second = await post_status(proxy)
    first_status, _, _ = await first
    third_status, _, _ = await post_status(proxy)

    assert first_status == 200
    assert second_status == 429
    assert second_headers["Retry-After"] == "5"
    assert "already running" in second["message"]
    assert third_status == 200
    assert upstream.count("POST", "/v1/chat/completions") == 2


async def test_live_stream_stall_names_live_limit(upstream):
    """A stream that stops mid-way is reported against the live test's own limit."""
    upstream.control = {"chunks": 3, "gap": 2.0}
    settings = ProxySettings(
        upstream_url=upstream.url,
        connect_timeout=5,
        first_byte_timeout=600,
        idle_timeout=600,
        max_body_size=0,
        max_concurrent_requests=0,
    )
    log = logging.getLogger("akko-test-diagnostics")
    diagnostics = GatewayDiagnostics(
        settings,
        GatewayKey(GATEWAY_KEY, "", log),
        read_default_models({"JUPYTER_AI_DEFAULT_MODEL": "akko:qwen2.5:3b"}),
        log,
        timeout=0.5,
        live_timeout=0.5,
    )
    try:
        report = await diagnostics.run(live=True)
    finally:
        await diagnostics.close()
    live = {check.name: check for check in report.checks}["live_test"]

    assert live.status == "error"
    assert live.message == (
        f"The live test stream from {upstream.url} stopped: nothing arrived for 0.5 s."
    )
    assert "idle_timeout" not in live.message
    assert "CPU" in live.hint


async def test_status_unknown_host_explained(proxy, upstream):
    headers = {**proxy.auth_headers(), "Host": "gateway.example"}
    async with proxy.session.get(proxy.server_path("akko-llm/status"), headers=headers) as response:
        status = response.status
        document = await response.json()

    assert status == 403
    assert document["reason"] == "host_not_allowed"
    assert "'gateway.example'" in document["message"]
    assert "c.ServerApp.local_hostnames" in document["message"]
    assert upstream.requests == []
