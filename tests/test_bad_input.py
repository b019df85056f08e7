"""Bad input from the client: each gets a 4xx JSON answer and nothing is forwarded.

The request checks of the proxy run before anything reaches the upstream, so
every test here also checks the upstream's request log. Property-based tests
(hypothesis) send generated paths, methods and bodies and check two
invariants: only allowed routes reach the upstream, and the gateway key goes
to the configured upstream and nowhere else.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import GATEWAY_KEY
from tests.test_faults import assert_openai_error, assert_server_serves
from tests.upstreams.openai_compat import OpenAIUpstream

CHAT = "chat/completions"
JSON_HEADERS = {"Content-Type": "application/json"}


async def post_raw(proxy, body: bytes, headers=None, path: str = CHAT):
    """POST ``body`` as it is; return the status and the parsed JSON answer."""
    async with proxy.request("POST", path, data=body, headers=headers) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return response.status, await response.json()


# ------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    "body, code",
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"{'model': 'qwen2.5:3b'}", "invalid_json"),
        (b'{"model": "qwen2.5:3b",}', "invalid_json"),
        (b'{"model": "qwen2.5:3b"} trailing', "invalid_json"),
        (b"null", "invalid_body"),
        (b"[1, 2]", "invalid_body"),
        (b'"a string"', "invalid_body"),
        (b"NaN", "invalid_json"),
        (b'{"model": "qwen2.5:3b", "temperature": NaN}', "invalid_json"),
        (b'{"model": "qwen2.5:3b", "temperature": -Infinity}', "invalid_json"),
    ],
)
async def test_invalid_json_is_400(proxy, upstream, body, code):
    status, document = await post_raw(proxy, body, JSON_HEADERS)
    assert status == 400
    error = assert_openai_error(document)
    assert error["code"] == code
    assert "chat/completions" in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/octet-stream",
    ],
)
async def test_wrong_content_type_is_400(proxy, upstream, content_type):
    body = json.dumps({"model": "qwen2.5:3b", "messages": []}).encode()
    # aiohttp adds application/octet-stream to a bytes body without one.
    headers = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
    status, document = await post_raw(proxy, body, headers)
    assert status == 400
    error = assert_openai_error(document)
    assert error["code"] == "invalid_content_type"
    assert "Content-Type: application/json" in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_content_type_variants_accepted(proxy, upstream, content_type):
    body = json.dumps({"model": "qwen2.5:3b", "messages": []}).encode()
    status, _document = await post_raw(proxy, body, {"Content-Type": content_type})
    assert status == 200
    assert upstream.requests[0].headers["Content-Type"] == content_type


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "qwen2.5:3b", "messages": [{"content": "caf\xe9"}]}',
        b'{"model": "\xff\xfe"}',
        '{"model": "qwen2.5:3b"}'.encode("utf-16"),
        '{"model": "qwen2.5:3b"}'.encode("utf-32-le"),
    ],
    ids=["latin-1", "invalid-bytes", "utf-16", "utf-32"],
)
async def test_non_utf8_body_is_400(proxy, upstream, body):
    status, document = await post_raw(proxy, body, JSON_HEADERS)
    assert status == 400
    error = assert_openai_error(document)
    assert error["code"] == "invalid_json"
    assert upstream.requests == []


async def test_deeply_nested_body_is_400(proxy, upstream, resources):
    async with proxy.request("GET", "models") as response:
        await response.read()
    await assert_server_serves(proxy)
    resources.mark()
    seen_before = len(upstream.requests)

    depth = 200_000
    body = b'{"model": "qwen2.5:3b", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    status, document = await post_raw(proxy, body, JSON_HEADERS)
    assert status == 400
    error = assert_openai_error(document)
    assert error["code"] == "invalid_json"
    assert "nested too deeply" in error["message"]
    assert upstream.requests[seen_before:] == []

    await assert_server_serves(proxy)
    await resources.assert_released()


async def test_moderately_nested_body_forwarded(proxy, upstream):
    """Nesting that Python parses (tool schemas go a few dozen deep) is forwarded."""
    nested: dict = {}
    for _ in range(200):
        nested = {"properties": nested}
    body = json.dumps(
        {"model": "qwen2.5:3b", "messages": [], "tools": [nested], "x_test": {"echo": True}}
    ).encode()
    status, document = await post_raw(proxy, body, JSON_HEADERS)
    assert status == 200
    assert document["sha256"] == hashlib.sha256(body).hexdigest()


async def test_huge_integer_is_400(proxy, upstream):
    """Python refuses integers over 4300 digits; the proxy says so instead of failing."""
    body = b'{"model": "qwen2.5:3b", "max_tokens": ' + b"9" * 5000 + b"}"
    status, document = await post_raw(proxy, body, JSON_HEADERS)
    assert status == 400
    assert assert_openai_error(document)["code"] == "invalid_json"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": 10**300, "n": 10**9, "temperature": -1e308},
        {"stream": "yes", "top_p": "high"},
        {"messages": [{"role": "user", "content": ""}] * 10_000},
        {"model": ["qwen2.5:3b"], "stop": {"x": None}},
        {"model": "x" * 100_000},
        {"model": "qwen2.5:3b\u2028\u0085"},
    ],
    ids=["huge-numbers", "wrong-types", "many-messages", "model-not-string",
         "long-model", "unicode-separators"],
)
async def test_absurd_values_forwarded_unchanged(proxy, upstream, fields):
    """Parameter values are the gateway's to judge; the proxy passes them byte for byte.

    The gateway validates values against the model it serves, and its 4xx
    answer passes through (see test_faults); the proxy must neither fail on
    them nor change them.
    """
    payload = {"model": "qwen2.5:3b", "messages": [], **fields, "x_test": {"echo": True}}
    body = json.dumps(payload).encode()
    status, document = await post_raw(proxy, body, JSON_HEADERS)
    assert status == 200
    assert document == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}


@pytest.mark.parametrize("model", ["qwen\r\n2.5", "qwen\x00", "a\x1b[31m", "q\x7f", "\t"])
async def test_control_characters_in_model_is_400(proxy, upstream, model):
    body = json.dumps({"model": model, "messages": []}).encode()
    status, document = await post_raw(proxy, body, JSON_HEADERS)
    assert status == 400
    error = assert_openai_error(document)
    assert error["code"] == "invalid_model"
    # The message shows the id escaped, never the raw control characters.
    assert not any(ord(char) < 0x20 for char in error["message"])
    assert upstream.requests == []


# -------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "path",
    [
        "models/qwen%0d%0a2.5",
        "models/qwen%0aX-Injected:%20yes",
        "models/%00",
        "models/a%09b",
        "models/%7f",
        "models/x%5c..%5ckey",
        "models/x/%2e/y",
        "models/" + "a" * 600,
        "models/" + "a/" * 300 + "b",
        "key" + "/x" * 2000,
        "chat/completions;/../key/generate",
        "models;/../key/generate",
    ],
)
async def test_bad_model_path_is_404(proxy, upstream, path):
    async with proxy.request("GET", path) as response:
        assert response.status == 404
        error = assert_openai_error(await response.json())
    assert error["code"] == "route_not_found"
    assert not any(ord(char) < 0x20 for char in error["message"])
    assert upstream.requests == []


@pytest.mark.parametrize("path", ["models/%c0%ae%c0%ae/key/generate", "models/%ff"])
async def test_invalid_utf8_path_is_400(proxy, upstream, path):
    """Tornado rejects a path that does not decode as UTF-8; the answer is still JSON."""
    async with proxy.request("GET", path) as response:
        assert response.status == 400
        error = assert_openai_error(await response.json())
    assert "unicode" in error["message"].lower()
    assert upstream.requests == []


async def _raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_overlong_path_closed(proxy, upstream, jp_http_port, jp_base_url):
    """A request line over Tornado's 64 KiB header limit is dropped unanswered."""
    path = f"{jp_base_url}akko-llm/v1/models/" + "a" * 70_000
    answer = await _raw_request(
        jp_http_port,
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {proxy.token}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert answer == b""
    assert upstream.requests == []
    await assert_server_serves(proxy)


@pytest.mark.parametrize(
    "name, value",
    [
        (b"User-Agent", b"agent\x01"),
        (b"User-Agent", b"agent\x00"),
        (b"OpenAI-Beta", b"assistants=v2\x7f"),
        (b"X-Request-ID", b"id\x0bX"),
        (b"Idempotency-Key", b"key\rX-Injected: yes"),
    ],
)
async def test_control_characters_in_header_rejected(
    proxy, upstream, jp_http_port, jp_base_url, name, value
):
    # NOTE: Tornado's HTTP parser rejects these before any handler runs, so
    # the answer is its bare 400 without a JSON body; no handler can change it.
    body = b'{"model": "qwen2.5:3b", "messages": []}'
    answer = await _raw_request(
        jp_http_port,
        f"POST {jp_base_url}akko-llm/v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: token {proxy.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n".encode()
        + name
        + b": "
        + value
        + b"\r\n\r\n"
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert upstream.requests == []
    await assert_server_serves(proxy)


async def test_latin1_header_forwarded_as_sent(proxy, upstream, jp_http_port, jp_base_url):
    """A header byte over 0x7f (allowed by HTTP as obs-text) does not break forwarding."""
    body = b'{"model": "qwen2.5:3b", "messages": []}'
    answer = await _raw_request(
        jp_http_port,
        f"POST {jp_base_url}akko-llm/v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: token {proxy.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "User-Agent: caf\xe9\r\nConnection: close\r\n\r\n".encode("latin-1")
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert len(upstream.requests) == 1


# ------------------------------------------------- property-based tests


@pytest.fixture
def decoy(jp_asyncio_loop):
    """A second upstream that must never receive anything, least of all the key."""
    server = OpenAIUpstream()
    jp_asyncio_loop.run_until_complete(server.start())
    yield server
    jp_asyncio_loop.run_until_complete(server.stop())


ALLOWED = {
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
}


def assert_allowed_upstream_request(method: str, path: str) -> None:
    """The invariant: only the allowed routes, and model ids without path tricks."""
    if (method, path) in ALLOWED:
        return
    assert method == "GET", (method, path)
    assert path.startswith("/v1/models/"), path
    model_id = unquote(path[len("/v1/models/") :])
    segments = model_id.split("/")
    assert all(segment not in ("", ".", "..") for segment in segments), path
    assert "\\" not in model_id, path
    assert not any(ord(char) < 0x20 or ord(char) == 0x7F for char in model_id), path


# Path pieces that have reached a gateway's admin routes through real proxies.
PATH_PIECES = [
    "models", "chat", "completions", "embeddings", "v1", "key", "generate",
    "user", "new", "config", "update", "spend", "logs", "qwen2.5:3b",
    "..", ".", "", "%2e", "%2E%2e", "%2e.", "%2f", "%2F", "%5c", "\\", "%00",
    "%0d%0a", "%252e%252e", "%25", ";", "@", ":", "~", "%40", "%3A",
    "127.0.0.1:{decoy_port}", "@127.0.0.1:{decoy_port}", "http:", "?x=1",
    "?url=http://127.0.0.1:{decoy_port}/v1",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

paths = st.lists(st.sampled_from(PATH_PIECES), min_size=0, max_size=8).map("/".join)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.fixed_dictionaries(
        {"model": st.text(max_size=20), "stream": st.booleans()},
        optional={"messages": st.just([]), "input": st.text(max_size=20)},
    ).map(lambda document: json.dumps(document).encode()),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=st.sampled_from(METHODS), path=paths, body=bodies)
def test_only_allowed_routes_reach_upstream(
    proxy, upstream, decoy, jp_asyncio_loop, method, path, body
):
    path = path.replace("{decoy_port}", decoy.url.split(":")[2].split("/")[0])
    seen_before = len(upstream.requests)

    async def send() -> tuple[int, bytes]:
        async with proxy.request(method, path, data=body, headers=JSON_HEADERS) as response:
            return response.status, await response.read()

    status, answer = jp_asyncio_loop.run_until_complete(send())

    for recorded in upstream.requests[seen_before:]:
        assert_allowed_upstream_request(recorded.method, recorded.path)
        assert recorded.headers["Authorization"] == f"Bearer {GATEWAY_KEY}"
    assert decoy.requests == []
    assert status != 500, answer
    if status >= 400 and upstream.requests[seen_before:] == []:
        assert_openai_error(json.loads(answer))
    assert GATEWAY_KEY.encode() not in answer


RAW_TARGETS = [
    "http://127.0.0.1:{decoy_port}/v1/models",
    "http://127.0.0.1:{decoy_port}{base_url}akko-llm/v1/models",
    "{base_url}akko-llm/v1/models/..%2F..%2F..%2Fkey%2Fgenerate",
    "{base_url}akko-llm/v1//127.0.0.1:{decoy_port}/v1/models",
    "{base_url}akko-llm/v1/models/@127.0.0.1:{decoy_port}",
    "{base_url}akko-llm/v1/models#@127.0.0.1:{decoy_port}",
]


@pytest.mark.parametrize("target", RAW_TARGETS)
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{decoy_port}"])
async def test_key_only_sent_to_configured_upstream(
    proxy, upstream, decoy, jp_http_port, jp_base_url, target, host
):
    """Absolute request targets and Host headers naming another server change nothing."""
    decoy_port = decoy.url.split(":")[2].split("/")[0]
    target = target.format(decoy_port=decoy_port, base_url=jp_base_url)
    host = host.format(decoy_port=decoy_port)
    await _raw_request(
        jp_http_port,
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: token {proxy.token}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert decoy.requests == []
    for recorded in upstream.requests:
        assert_allowed_upstream_request(recorded.method, recorded.path)
