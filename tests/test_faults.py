"""Upstream faults: each ends in a defined status and an OpenAI error, and leaks nothing.

Every test sends a request that meets one fault, then checks four things: the
status and error ``code``, the OpenAI error shape, that the Jupyter server
still serves (a good request afterwards), and that no file descriptor or
asyncio task is left behind. Faults that aiohttp.web cannot produce come from
the raw upstream in tests/upstreams/faulty.py.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import GATEWAY_KEY, apply_akko_marker
from tests.test_proxy_errors import _resolver_is_loopback
from tests.upstreams.https import start_https_upstream

CHAT = "chat/completions"
SHORT_TIMEOUTS = {"first_byte_timeout": 0.5, "idle_timeout": 0.5}


def chat_body(stream: bool = False, **x_test) -> dict:
    return {
        "model": "qwen2.5:3b",
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        "x_test": x_test,
    }


def parse_events(raw: bytes) -> list[str]:
    return [
        line[len(b"data: ") :].decode()
        for line in raw.split(b"\n")
        if line.startswith(b"data: ")
    ]


def assert_openai_error(document: dict) -> dict:
    """Check the OpenAI error shape and return its ``error`` object."""
    assert set(document) == {"error"}
    error = document["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert isinstance(error["code"], str)
    assert GATEWAY_KEY not in error["message"]
    return error


async def error_of(response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json")
    return assert_openai_error(await response.json())


async def assert_server_serves(proxy) -> None:
    async with proxy.session.get(
        proxy.server_path("api/status"), headers=proxy.auth_headers()
    ) as response:
        assert response.status == 200
    async with proxy.session.get(
        proxy.server_path("akko-llm/status"), headers=proxy.auth_headers()
    ) as response:
        assert response.status == 200


# ------------------------------------------------------- the raw upstream


@pytest.fixture
def akko_settings(request, faulty_upstream, gateway_key_file) -> dict:
    settings = {"upstream_url": faulty_upstream.url, "api_key_file": str(gateway_key_file)}
    settings.update(SHORT_TIMEOUTS)
    apply_akko_marker(request, settings)
    return settings


async def _warm_up(proxy, faulty_upstream, resources) -> int:
    """Open the pooled connections with a good request, then record the counts.

    Returns the number of connections open at the upstream: one of the proxy
    and one of the diagnostics behind ``akko-llm/status``.
    """
    faulty_upstream.fault = "ok"
    async with proxy.request("GET", "models") as response:
        assert response.status == 200
        await response.read()
    await assert_server_serves(proxy)
    resources.mark()
    return faulty_upstream.open_connections


async def _after_fault(proxy, faulty_upstream, resources, connections: int) -> None:
    faulty_upstream.fault = "ok"
    async with proxy.request("GET", "models") as response:
        assert response.status == 200
        assert json.loads(await response.read())["data"][0]["id"] == "qwen2.5:3b"
    await assert_server_serves(proxy)
    await resources.assert_released()
    assert faulty_upstream.open_connections <= connections


@pytest.mark.parametrize(
    "fault, status, code",
    [
        ("reset_before_headers", 502, "upstream_disconnected"),
        ("close_before_headers", 502, "upstream_disconnected"),
        ("no_headers", 504, "upstream_timeout"),
        ("partial_headers", 504, "upstream_timeout"),
        ("huge_headers", 502, "upstream_invalid_response"),
        ("truncated_body", 502, "upstream_disconnected"),
        ("reset_mid_body", 502, "upstream_disconnected"),
        ("stalled_body", 504, "upstream_timeout"),
        ("truncated_json_error", 500, "upstream_error"),
    ],
)
async def test_plain_request_fault(proxy, faulty_upstream, resources, fault, status, code):
    connections = await _warm_up(proxy, faulty_upstream, resources)

    faulty_upstream.fault = fault
    async with proxy.request("POST", CHAT, json=chat_body()) as response:
        assert response.status == status
        error = await error_of(response)
    assert error["code"] == code
    assert faulty_upstream.url in error["message"]

    await _after_fault(proxy, faulty_upstream, resources, connections)


async def test_cut_large_body_stays_incomplete(proxy, faulty_upstream, resources, caplog):
    """A body already being passed on when the upstream fails must not end as if whole."""
    import aiohttp

    connections = await _warm_up(proxy, faulty_upstream, resources)

    faulty_upstream.fault = "truncated_large_body"
    async with proxy.request("POST", CHAT, json=chat_body()) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert "response body for" in caplog.text
    assert "failed after it started" in caplog.text

    await _after_fault(proxy, faulty_upstream, resources, connections)


@pytest.mark.parametrize(
    "fault, code, setting",
    [
        ("reset_mid_stream", "upstream_disconnected", None),
        ("stalled_stream", "upstream_timeout", "c.AkkoLLM.idle_timeout"),
    ],
)
async def test_stream_fault_ends_with_error_event(
    proxy, faulty_upstream, resources, fault, code, setting
):
    connections = await _warm_up(proxy, faulty_upstream, resources)

    faulty_upstream.fault = fault
    async with proxy.request("POST", CHAT, json=chat_body(stream=True)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = await response.read()
    events = parse_events(raw)
    assert len(events) == 3
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "part"
    error = assert_openai_error(json.loads(events[-1]))
    assert error["code"] == code
    if setting:
        assert setting in error["message"]
    # The half event before the fault is dropped, not passed on.
    assert b'{"choi\n' not in raw
    assert raw.endswith(b"\n\n")

    await _after_fault(proxy, faulty_upstream, resources, connections)


async def test_huge_headers_named_in_message(proxy, faulty_upstream, resources):
    connections = await _warm_up(proxy, faulty_upstream, resources)

    faulty_upstream.fault = "huge_headers"
    async with proxy.request("GET", "models") as response:
        assert response.status == 502
        error = await error_of(response)
    assert "not valid HTTP" in error["message"]
    assert "c.AkkoLLM.upstream_url" in error["message"]
    # The header itself is not echoed back.
    assert "aaaaaaaa" not in error["message"]
    assert len(error["message"]) < 1000

    await _after_fault(proxy, faulty_upstream, resources, connections)


async def test_faults_in_a_row_leave_nothing(proxy, faulty_upstream, resources):
    """Twenty faults of each kind one after another; the pool stays usable."""
    connections = await _warm_up(proxy, faulty_upstream, resources)

    for fault in ("reset_before_headers", "truncated_body", "reset_mid_stream"):
        faulty_upstream.fault = fault
        for _ in range(20):
            async with proxy.request("POST", CHAT, json=chat_body(stream=True)) as response:
                await response.read()
            assert response.status in (200, 502)

    await _after_fault(proxy, faulty_upstream, resources, connections)


# ------------------------------------------ unreachable upstreams and TLS


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _check_unreachable(proxy, resources, code: str) -> dict:
    # The first request creates the pooled client session; count after it.
    async with proxy.request("GET", "models") as response:
        await response.read()
    await assert_server_serves(proxy)
    resources.mark()

    for method, path, body in [("GET", "models", None), ("POST", CHAT, chat_body())]:
        async with proxy.request(method, path, json=body) as response:
            assert response.status == 502
            error = await error_of(response)
        assert error["code"] == code

    await assert_server_serves(proxy)
    await resources.assert_released()
    return error


@pytest.mark.akko(upstream_url=f"http://127.0.0.1:{_closed_port()}/v1")
async def test_refused_leaves_nothing(proxy, resources):
    error = await _check_unreachable(proxy, resources, "upstream_unreachable")
    assert "c.AkkoLLM.upstream_url" in error["message"]


@pytest.mark.skipif(
    not _resolver_is_loopback(),
    reason="a DNS lookup would leave this machine; scripts/test runs the suite in a "
    "network namespace whose resolver is on loopback",
)
@pytest.mark.akko(upstream_url="http://akko-akko-litellm.invalid:4000/v1")
async def test_dns_failure_leaves_nothing(proxy, resources):
    error = await _check_unreachable(proxy, resources, "upstream_unreachable")
    assert "akko-akko-litellm.invalid" in error["message"]


@pytest.fixture
def self_signed_upstream(jp_asyncio_loop):
    """An HTTPS upstream on 127.0.0.1 whose CA no system bundle contains."""
    import trustme

    runner, url, _ = start_https_upstream(jp_asyncio_loop, trustme.CA())
    yield url
    jp_asyncio_loop.run_until_complete(runner.cleanup())


@pytest.fixture
def tls_settings(request, self_signed_upstream, gateway_key_file):
    return {"upstream_url": self_signed_upstream, "api_key_file": str(gateway_key_file)}


class TestSelfSignedUpstream:
    @pytest.fixture
    def akko_settings(self, tls_settings):
        return tls_settings

    async def test_tls_failure_leaves_nothing(self, proxy, resources, self_signed_upstream):
        error = await _check_unreachable(proxy, resources, "upstream_tls_error")
        assert self_signed_upstream in error["message"]
        assert "c.AkkoLLM.ca_bundle" in error["message"]


# --------------------------------------------- error answers of the gateway


class TestGatewayErrorAnswers:
    """4xx and 5xx answers with a JSON body, an ingress' HTML page and no body."""

    @pytest.fixture
    def akko_settings(self, upstream, gateway_key_file):
        return {"upstream_url": upstream.url, "api_key_file": str(gateway_key_file)}

    @pytest.mark.parametrize("status", [400, 404, 422, 500, 502, 503, 504])
    async def test_json_error_passes_through(self, proxy, upstream, resources, status):
        await _mark_after_good_request(proxy, resources)
        upstream_error = {"message": f"error {status}", "type": "x", "code": str(status)}
        body = chat_body(status=status, error=upstream_error)
        async with proxy.request("POST", CHAT, json=body) as response:
            assert response.status == status
            assert json.loads(await response.read()) == {"error": upstream_error}
        await _check_still_serving(proxy, resources)

    @pytest.mark.parametrize("status", [400, 404, 500, 502, 503, 504])
    @pytest.mark.parametrize(
        "raw_body, content_type, excerpt",
        [
            ("<html><head><title>502 Bad Gateway</title></head><body><center>"
             "<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body>"
             "</html>", "text/html", "502 Bad Gateway"),
            ("", "text/html", "empty body"),
            ("", "application/json", "empty body"),
            ("upstream connect error or disconnect/reset before headers", "text/plain",
             "upstream connect error"),
        ],
        ids=["html", "empty-html", "empty-json", "text"],
    )
    async def test_non_json_error_wrapped(
        self, proxy, upstream, resources, status, raw_body, content_type, excerpt
    ):
        await _mark_after_good_request(proxy, resources)
        body = chat_body(status=status, raw_body=raw_body, content_type=content_type)
        async with proxy.request("POST", CHAT, json=body) as response:
            # The status is kept, so a client error stays a client error.
            assert response.status == status
            error = await error_of(response)
        assert error["code"] == "upstream_error"
        assert f"HTTP {status}" in error["message"]
        assert excerpt in error["message"]
        assert "<" not in error["message"]
        await _check_still_serving(proxy, resources)

    async def test_deeply_nested_error_wrapped(self, proxy, upstream, resources):
        """A JSON error nested past Python's recursion limit is still answered."""
        await _mark_after_good_request(proxy, resources)
        nested = "[" * 100_000 + "]" * 100_000
        body = chat_body(status=500, raw_body=nested, content_type="application/json")
        async with proxy.request("POST", CHAT, json=body) as response:
            assert response.status == 500
            error = await error_of(response)
        assert error["code"] == "upstream_error"
        await _check_still_serving(proxy, resources)


async def _mark_after_good_request(proxy, resources) -> None:
    async with proxy.request("GET", "models") as response:
        assert response.status == 200
        await response.read()
    await assert_server_serves(proxy)
    resources.mark()


async def _check_still_serving(proxy, resources) -> None:
    async with proxy.request("GET", "models") as response:
        assert response.status == 200
        await response.read()
    await assert_server_serves(proxy)
    await resources.assert_released()
