"""Failures: unreachable and misbehaving upstreams, limits, bad settings, the key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket

import pytest

from tests.conftest import GATEWAY_KEY, apply_akko_marker
from tests.test_proxy_basics import _cookie_header, _login_cookies
from tests.upstreams.https import start_https_upstream
from tests.upstreams.openai_compat import padding_text

CHAT = "chat/completions"


def chat_body(**x_test) -> dict:
    return {"model": "qwen2.5:3b", "messages": [{"role": "user", "content": "hi"}], "x_test": x_test}


async def error_of(response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json")
    document = await response.json()
    assert set(document["error"]) >= {"message", "type", "code"}
    return document["error"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


CLOSED_PORT = _closed_port()


@pytest.mark.akko(upstream_url=f"http://127.0.0.1:{CLOSED_PORT}/v1")
async def test_refused_upstream_is_502(proxy, caplog):
    async with proxy.request("GET", "models") as response:
        assert response.status == 502
        error = await error_of(response)
    assert error["code"] == "upstream_unreachable"
    assert f"http://127.0.0.1:{CLOSED_PORT}/v1: Connection refused." in error["message"]
    assert "c.AkkoLLM.upstream_url" in error["message"]
    assert "AKKO_LLM_UPSTREAM_URL" in error["message"]
    assert GATEWAY_KEY not in caplog.text


def _resolver_is_loopback() -> bool:
    try:
        with open("/etc/resolv.conf") as resolv:
            servers = [line.split()[1] for line in resolv if line.startswith("nameserver")]
    except OSError:
        return False
    return bool(servers) and all(s.startswith("127.") or s == "::1" for s in servers)


@pytest.mark.skipif(
    not _resolver_is_loopback(),
    reason="a DNS lookup would leave this machine; scripts/test runs the suite in a "
    "network namespace whose resolver is on loopback",
)
@pytest.mark.akko(upstream_url="http://akko-akko-litellm.invalid:4000/v1")
async def test_dns_failure_is_502(proxy):
    async with proxy.request("GET", "models") as response:
        assert response.status == 502
        error = await error_of(response)
    assert error["code"] == "upstream_unreachable"
    assert "akko-akko-litellm.invalid" in error["message"]
    assert "c.AkkoLLM.upstream_url" in error["message"]


@pytest.fixture
def tls_upstream(jp_asyncio_loop):
    """An HTTPS upstream whose certificate no system CA vouches for."""
    import trustme

    runner, url, _ = start_https_upstream(jp_asyncio_loop, trustme.CA())
    yield url
    jp_asyncio_loop.run_until_complete(runner.cleanup())


@pytest.fixture
def akko_settings(request, upstream, tls_upstream_url_if_any, gateway_key_file) -> dict:
    settings = {"upstream_url": upstream.url, "api_key_file": str(gateway_key_file)}
    if tls_upstream_url_if_any:
        settings["upstream_url"] = tls_upstream_url_if_any
    apply_akko_marker(request, settings)
    return settings


@pytest.fixture
def tls_upstream_url_if_any(request):
    if "tls_upstream" in request.fixturenames:
        return request.getfixturevalue("tls_upstream")
    return None


async def test_tls_failure_is_502(tls_upstream, proxy):
    async with proxy.request("GET", "models") as response:
        assert response.status == 502
        error = await error_of(response)
    assert error["code"] == "upstream_tls_error"
    assert tls_upstream in error["message"]
    assert "c.AkkoLLM.upstream_url" in error["message"]


@pytest.mark.akko(api_key="sk-wrong-key")
async def test_rejected_key_is_502_not_users_fault(proxy, upstream, caplog):
    async with proxy.request("GET", "models") as response:
        assert response.status == 502
        error = await error_of(response)
    assert error["code"] == "gateway_key_rejected"
    assert "not your fault" in error["message"]
    assert "c.AkkoLLM.api_key" in error["message"]
    assert "AKKO_LLM_API_KEY" in error["message"]
    assert "sk-wrong-key" not in error["message"]
    assert "sk-wrong-key" not in caplog.text


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_auth_status_is_key_rejected(proxy, upstream, status):
    body = chat_body(status=status, error={"message": "invalid key", "type": "auth_error"})
    async with proxy.request("POST", CHAT, json=body) as response:
        assert response.status == 502
        error = await error_of(response)
    assert error["code"] == "gateway_key_rejected"


async def test_litellm_no_db_answer_is_key_rejected(proxy, upstream):
    body = chat_body(
        status=400,
        error={"message": "Authentication Error, No connected db.", "type": "no_db_connection",
               "param": "None", "code": "400"},
    )
    async with proxy.request("POST", CHAT, json=body) as response:
        assert response.status == 502
        error = await error_of(response)
    assert error["code"] == "gateway_key_rejected"


@pytest.mark.parametrize(
    "status, upstream_error",
    [
        (400, {"message": "Invalid model name passed in model=nope. Call `/v1/models` to view "
               "available models for your key.", "type": "invalid_request_error",
               "param": "model", "code": "400"}),
        (404, {"message": "model 'nope' not found", "type": "not_found_error", "code": "404"}),
        (429, {"message": "Budget has been exceeded!", "type": "budget_exceeded",
               "param": None, "code": "429"}),
        (500, {"message": "Ollama crashed", "type": "internal_server_error", "code": "500"}),
    ],
)
async def test_upstream_json_errors_pass_through(proxy, upstream, status, upstream_error):
    async with proxy.request("POST", CHAT, json=chat_body(status=status, error=upstream_error)) as response:
        assert response.status == status
        raw = await response.read()
    assert json.loads(raw) == {"error": upstream_error}


async def test_upstream_html_error_is_wrapped(proxy, upstream):
    page = "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
    async with proxy.request("POST", CHAT, json=chat_body(status=502, raw_body=page)) as response:
        assert response.status == 502
        error = await error_of(response)
    assert error["code"] == "upstream_error"
    assert "502 Bad Gateway" in error["message"]
    assert "<h1>" not in error["message"]


@pytest.mark.akko(first_byte_timeout=0.5)
async def test_first_byte_timeout_is_504(proxy, upstream):
    async with proxy.request("POST", CHAT, json=chat_body(delay=3)) as response:
        assert response.status == 504
        error = await error_of(response)
    assert error["code"] == "upstream_timeout"
    assert "c.AkkoLLM.first_byte_timeout" in error["message"]
    assert "AKKO_LLM_FIRST_BYTE_TIMEOUT" in error["message"]


@pytest.mark.parametrize("size", [900 * 1024, 2 * 1024 * 1024])
async def test_large_body_arrives_identical(proxy, upstream, size):
    body = {"model": "nomic-embed-text", "input": ["x" * (size // 4)] * 4, "x_test": {"echo": True}}
    raw = json.dumps(body).encode()
    async with proxy.request(
        "POST", "embeddings", data=raw, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 200
        echoed = await response.json()
    assert echoed == {"sha256": hashlib.sha256(raw).hexdigest(), "length": len(raw)}
    assert upstream.requests[0].body == raw


@pytest.mark.akko(max_body_size=1024 * 1024)
@pytest.mark.parametrize("chunked", [False, True])
async def test_body_over_limit_is_413(proxy, upstream, chunked):
    raw = json.dumps({"model": "x", "input": "y" * (2 * 1024 * 1024)}).encode()

    async def chunks():
        for start in range(0, len(raw), 65536):
            yield raw[start : start + 65536]

    data = chunks() if chunked else raw
    async with proxy.request("POST", "embeddings", data=data) as response:
        assert response.status == 413
        error = await error_of(response)
    assert error["code"] == "request_too_large"
    assert f"The request body is {len(raw)} bytes" in error["message"]
    assert "1048576 bytes" in error["message"]
    assert "c.AkkoLLM.max_body_size" in error["message"]
    assert upstream.requests == []


@pytest.mark.akko(max_concurrent_requests=2)
async def test_concurrency_limit_is_429(proxy, upstream):
    async def slow_request():
        async with proxy.request("POST", CHAT, json=chat_body(delay=1)) as response:
            return response.status

    running = [asyncio.ensure_future(slow_request()) for _ in range(2)]
    await asyncio.sleep(0.3)
    async with proxy.request("POST", CHAT, json=chat_body()) as response:
        assert response.status == 429
        assert response.headers["Retry-After"].isdigit()
        error = await error_of(response)
    assert error["code"] == "too_many_concurrent_requests"
    assert "c.AkkoLLM.max_concurrent_requests" in error["message"]
    assert await asyncio.gather(*running) == [200, 200]
    # The slots are free again.
    async with proxy.request("POST", CHAT, json=chat_body()) as response:
        assert response.status == 200


@pytest.mark.akko(upstream_url="ftp://gateway:4000/v1", connect_timeout=-1.0)
async def test_bad_settings_reported_in_every_response(proxy, upstream, caplog):
    for _ in range(2):
        async with proxy.request("GET", "models") as response:
            assert response.status == 503
            error = await error_of(response)
        assert error["code"] == "proxy_misconfigured"
        assert "c.AkkoLLM.upstream_url" in error["message"]
        assert "ftp://gateway:4000/v1" in error["message"]
        assert "c.AkkoLLM.connect_timeout" in error["message"]
    assert "c.AkkoLLM.upstream_url" in caplog.text
    assert upstream.requests == []
    # The Jupyter server itself keeps serving.
    async with proxy.session.get(proxy.server_path("api/status"), headers=proxy.auth_headers()) as response:
        assert response.status == 200


@pytest.mark.akko(api_key="", api_key_file="/nonexistent/akko-llm/key")
async def test_unreadable_key_file_reported(proxy, upstream):
    async with proxy.request("GET", "models") as response:
        assert response.status == 503
        error = await error_of(response)
    assert error["code"] == "gateway_key_unavailable"
    assert "/nonexistent/akko-llm/key" in error["message"]
    assert "c.AkkoLLM.api_key_file" in error["message"]
    assert upstream.requests == []


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "secret" / "api-key"
    path.parent.mkdir()
    path.write_text(GATEWAY_KEY + "\n")
    return path


@pytest.fixture
def akko_key_file_settings(key_file, upstream):
    return {"upstream_url": upstream.url, "api_key": "", "api_key_file": str(key_file)}


async def test_key_file_reread_after_rotation(jp_configurable_serverapp, key_file, upstream,
                                              http_server_port, jp_base_url, jp_asyncio_loop):
    """A rotated key file takes effect without a restart."""
    import tornado.httpserver

    from tests.conftest import ProxyClient

    app = jp_configurable_serverapp(
        config={
            "ServerApp": {"jpserver_extensions": {"akko_jupyter_llm": True,
                                                  "jupyter_server_terminals": False}},
            "AkkoLLM": {"upstream_url": upstream.url, "api_key": "", "api_key_file": str(key_file)},
        }
    )
    server = tornado.httpserver.HTTPServer(app.web_app)
    server.add_socket(http_server_port[0])
    client = ProxyClient(f"http://127.0.0.1:{http_server_port[1]}", jp_base_url,
                         app.identity_provider.token)
    try:
        async with client.request("GET", "models") as response:
            assert response.status == 200
        upstream.expected_key = "sk-rotated-key"
        key_file.write_text("sk-rotated-key\n")
        os.utime(key_file, (1, 1))  # A different mtime, whatever the clock's resolution.
        await asyncio.sleep(1.1)
        async with client.request("GET", "models") as response:
            assert response.status == 200
        assert upstream.requests[-1].headers["Authorization"] == "Bearer sk-rotated-key"
    finally:
        await client.close()
        server.stop()


async def test_env_key_removed_from_environment(monkeypatch, jp_configurable_serverapp, upstream):
    monkeypatch.setenv("AKKO_LLM_API_KEY", "sk-from-environment")
    monkeypatch.setenv("AKKO_LLM_UPSTREAM_URL", upstream.url)
    app = jp_configurable_serverapp(
        config={"ServerApp": {"jpserver_extensions": {"akko_jupyter_llm": True,
                                                      "jupyter_server_terminals": False}}}
    )
    assert "AKKO_LLM_API_KEY" not in os.environ
    extension = app.web_app.settings["akko_jupyter_llm"]
    assert extension.proxy_state.key.get() == "sk-from-environment"
    assert extension.proxy_state.settings.upstream_url == upstream.url


async def test_error_messages_never_show_the_key(proxy, upstream, caplog):
    """Run every kind of failure and look for the key in responses and logs."""
    bodies = [
        chat_body(status=401, error={"message": f"bad key {GATEWAY_KEY}"}),
        chat_body(status=502, raw_body=f"<p>{GATEWAY_KEY}</p>"),
        chat_body(status=400, error={"message": "nope"}),
    ]
    seen = ""
    for body in bodies:
        async with proxy.request("POST", CHAT, json=body) as response:
            seen += await response.text()
    assert GATEWAY_KEY not in seen
    assert GATEWAY_KEY not in caplog.text


@pytest.mark.akko(idle_timeout="soon")
async def test_wrongly_typed_setting_reported_not_fatal(proxy, upstream):
    async with proxy.request("GET", "models") as response:
        assert response.status == 503
        error = await error_of(response)
    assert "c.AkkoLLM.idle_timeout" in error["message"]
    assert "'soon'" in error["message"]
    assert upstream.requests == []


@pytest.mark.akko(
    upstream_url="ftp://gateway:4000/v1",
    api_key="",
    api_key_file="/nonexistent/akko-llm/key",
)
async def test_all_problems_in_one_response(proxy, upstream):
    async with proxy.request("GET", "models") as response:
        assert response.status == 503
        error = await error_of(response)
    assert "(1) c.AkkoLLM.upstream_url" in error["message"]
    assert "(2) Cannot read the gateway key file /nonexistent/akko-llm/key" in error["message"]


async def test_unknown_method_is_openai_error(proxy, upstream):
    async with proxy.request("PROPFIND", "models") as response:
        assert response.status == 405
        error = await error_of(response)
    assert error["type"] == "invalid_request_error"
    assert "GET models" in error["message"]
    assert upstream.requests == []


class TestHttpsToPlainPort:
    """An https:// upstream URL that names a port serving plain HTTP."""

    @pytest.fixture
    def akko_settings(self, akko_settings, upstream):
        return dict(akko_settings, upstream_url=upstream.url.replace("http://", "https://"))

    async def test_plain_http_port_named(self, proxy, upstream):
        async with proxy.request("GET", "models") as response:
            assert response.status == 502
            error = await error_of(response)
        assert error["code"] == "upstream_tls_error"
        assert "the port answered without TLS" in error["message"]
        assert "use http:// for that port" in error["message"]
        assert upstream.requests == []


async def test_upstream_redirect_is_502(proxy, upstream):
    """The proxy follows no redirect, which would take the key along, and explains why."""
    control = {
        "status": 302, "raw_body": "", "content_type": "text/plain",
        "location": "https://gateway.test/v1/chat/completions",
    }
    async with proxy.request("POST", CHAT, json=chat_body(**control)) as response:
        assert response.status == 502
        assert "Location" not in response.headers
        error = await error_of(response)
    assert error["code"] == "upstream_redirect"
    assert "(HTTP 302) to 'https://gateway.test/v1/chat/completions'" in error["message"]
    assert "c.AkkoLLM.upstream_url" in error["message"]
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("size", [3 * 1024 * 1024])
async def test_large_answer_arrives_identical(proxy, upstream, size):
    """A response larger than the proxy keeps in memory is passed on whole."""
    body = {"model": "qwen2.5:3b", "messages": [], "x_test": {"echo": True, "padding": size}}
    async with proxy.request("POST", CHAT, json=body) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        answer = await response.json()
    assert answer["padding"] == padding_text("", 0, size)


async def test_base_url_alone_is_json_404(proxy, upstream):
    async with proxy.session.get(
        proxy.server_path("akko-llm/v1"), headers=proxy.auth_headers()
    ) as response:
        assert response.status == 404
        error = await error_of(response)
    assert error["code"] == "route_not_found"
    assert "is the base URL for OpenAI clients, not a route" in error["message"]
    assert "akko-llm/v1/models" in error["message"]
    assert upstream.requests == []


async def test_unknown_host_header_is_explained(proxy, upstream):
    headers = {**proxy.auth_headers(), "Host": "gateway.example"}
    async with proxy.session.get(proxy.server_path("akko-llm/v1/models"), headers=headers) as response:
        assert response.status == 403
        error = await error_of(response)
    assert error["code"] == "host_not_allowed"
    assert "'gateway.example'" in error["message"]
    assert "c.ServerApp.local_hostnames" in error["message"]
    assert upstream.requests == []


async def test_cross_origin_request_is_explained(proxy, upstream):
    cookies = await _login_cookies(proxy)
    headers = {
        "Cookie": _cookie_header(cookies),
        "X-XSRFToken": cookies["_xsrf"],
        "Origin": "https://other.example",
    }
    async with proxy.session.get(proxy.server_path("akko-llm/v1/models"), headers=headers) as response:
        assert response.status == 404
        error = await error_of(response)
    assert error["code"] == "origin_not_allowed"
    assert "'https://other.example'" in error["message"]
    assert "c.ServerApp.allow_origin" in error["message"]
    assert upstream.requests == []


async def test_gateway_error_page_logged_once(proxy, upstream, caplog):
    control = {"status": 503, "raw_body": "<html>Service Unavailable</html>"}
    async with proxy.request("POST", CHAT, json=chat_body(**control)) as response:
        assert response.status == 503
        request_id = response.headers["X-Request-ID"]
        error = await error_of(response)
    assert error["code"] == "upstream_error"
    lines = [
        record.getMessage() for record in caplog.records
        if record.levelno >= logging.WARNING
        and record.getMessage().startswith(f"akko-llm {request_id}")
    ]
    assert len(lines) == 1, lines
    assert "Service Unavailable" in lines[0]
