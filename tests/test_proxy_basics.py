"""The proxy's routes, authentication and header handling, against the test upstream."""

from __future__ import annotations

import io
import json
import logging

import pytest

from akko_jupyter_llm.handlers import _writes_debug
from tests.conftest import GATEWAY_KEY


async def test_models_list_forwarded(proxy, upstream):
    async with proxy.request("GET", "models") as response:
        assert response.status == 200
        document = await response.json()
    assert [model["id"] for model in document["data"]] == [
        "qwen2.5:3b",
        "qwen2.5-coder:7b",
        "nomic-embed-text",
    ]
    assert upstream.paths() == ["/v1/models"]


async def test_gateway_key_added_upstream(proxy, upstream):
    async with proxy.request("GET", "models") as response:
        assert response.status == 200
    sent = upstream.requests[0].headers
    assert sent["Authorization"] == f"Bearer {GATEWAY_KEY}"


@pytest.mark.parametrize(
    "path, upstream_path",
    [
        ("models/qwen2.5-coder:7b", "/v1/models/qwen2.5-coder:7b"),
        ("models/qwen2.5-coder%3A7b", "/v1/models/qwen2.5-coder:7b"),
    ],
)
async def test_model_id_kept_whole(proxy, upstream, path, upstream_path):
    async with proxy.request("GET", path) as response:
        assert response.status == 200
        assert (await response.json())["id"] == "qwen2.5-coder:7b"
    assert upstream.paths() == [upstream_path]


async def test_model_id_with_slashes(proxy, upstream):
    upstream.models = [{"id": "hf.co/org/model:Q4_K_M", "object": "model"}]
    async with proxy.request("GET", "models/hf.co/org/model:Q4_K_M") as response:
        assert response.status == 200
    assert upstream.paths() == ["/v1/models/hf.co/org/model:Q4_K_M"]


async def test_model_id_in_body_unchanged(proxy, upstream):
    body = {"model": "qwen2.5-coder:7b", "messages": [{"role": "user", "content": "hi"}]}
    async with proxy.request("POST", "chat/completions", json=body) as response:
        assert response.status == 200
        reply = await response.json()
    assert reply["model"] == "qwen2.5-coder:7b"
    assert upstream.requests[0].json["model"] == "qwen2.5-coder:7b"


@pytest.mark.parametrize("path", ["chat/completions", "completions", "embeddings"])
async def test_post_routes_forwarded(proxy, upstream, path):
    body = {"model": "qwen2.5:3b", "prompt": "x", "input": "x", "messages": []}
    async with proxy.request("POST", path, json=body) as response:
        assert response.status == 200
    assert upstream.paths() == [f"/v1/{path}"]


BLOCKED_PATHS = [
    # The gateway's administrative routes.
    "key/generate",
    "key/info",
    "user/new",
    "team/new",
    "model/new",
    "config/update",
    "spend/logs",
    "health",
    # Written with dot segments, encoded dots and slashes, doubled slashes.
    "models/../key/generate",
    "models/..%2Fkey%2Fgenerate",
    "models/%2e%2e/key/generate",
    "models/%2E%2E/%2E%2E/key/generate",
    "models/x/../../key/generate",
    "models%2F..%2Fkey%2Fgenerate",
    "chat%2Fcompletions",
    "../key/generate",
    "%2e%2e/key/generate",
    "/key/generate",
    "//models",
    "models//x",
    "models/",
    "models/.",
    "models/x/.",
    "models/x\\..\\key",
    "chat/completions/",
    "chat/completions/../../key/generate",
    "embeddings/x",
    "",
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", BLOCKED_PATHS)
async def test_blocked_route_is_404(proxy, upstream, method, path):
    kwargs = {"json": {"model": "x"}} if method == "POST" else {}
    async with proxy.request(method, path, **kwargs) as response:
        assert response.status == 404
        document = await response.json()
    assert "error" in document
    assert document["error"]["code"] == "route_not_found"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "models"),
        ("DELETE", "models/qwen2.5:3b"),
        ("GET", "chat/completions"),
        ("PUT", "embeddings"),
        ("PATCH", "completions"),
        ("DELETE", "key/delete"),
    ],
)
async def test_wrong_method_is_404(proxy, upstream, method, path):
    async with proxy.request(method, path, data=b"{}") as response:
        assert response.status == 404
        document = await response.json()
    assert document["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


async def test_raw_dot_segments_not_forwarded(proxy, upstream, jp_http_port, jp_base_url):
    """Send dot segments that a client library would normalise, byte for byte."""
    import asyncio

    raw_paths = [
        f"{jp_base_url}akko-llm/v1/models/../../akko-llm/v1/../v1/key/generate",
        f"{jp_base_url}akko-llm/v1/models/../key/generate",
        f"{jp_base_url}akko-llm/v1/./key/generate",
    ]
    for raw_path in raw_paths:
        reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
        writer.write(
            f"GET {raw_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: token {proxy.token}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
        status_line = answer.split(b"\r\n", 1)[0]
        assert b" 404 " in status_line, (raw_path, status_line)
    assert upstream.requests == []


async def test_unauthenticated_is_json_403(proxy, upstream):
    for method, path in [("GET", "models"), ("POST", "chat/completions"), ("GET", "key/generate")]:
        async with proxy.request(method, path, auth=False, json={}, allow_redirects=False) as response:
            assert response.status == 403, (method, path)
            assert response.headers["Content-Type"].startswith("application/json")
            document = await response.json()
        assert document["error"]["code"] == "not_authenticated"
        assert "'Authorization: token <token>'" in document["error"]["message"]
        assert "'On a server with a password'" in document["error"]["message"]
    assert upstream.requests == []


async def test_wrong_token_is_403(proxy, upstream):
    headers = {"Authorization": "token not-the-token"}
    async with proxy.request("GET", "models", auth=False, headers=headers) as response:
        assert response.status == 403
    assert upstream.requests == []


async def test_bearer_token_accepted(proxy, upstream):
    headers = {"Authorization": f"Bearer {proxy.token}"}
    async with proxy.request("GET", "models", auth=False, headers=headers) as response:
        assert response.status == 200


def _cookies_from(response) -> dict[str, str]:
    return {name: morsel.value for name, morsel in response.cookies.items()}


async def _login_cookies(proxy) -> dict[str, str]:
    """Log in with the token as a browser does; return the cookies and the XSRF token.

    Cookies are handled by hand because aiohttp matches a cookie's Path against
    the decoded request path, and the base URL /a%40b/ decodes to /a@b/.
    """
    async with proxy.session.get(
        proxy.server_path("login"), allow_redirects=False
    ) as response:
        assert response.status == 200
        cookies = _cookies_from(response)
    xsrf = cookies["_xsrf"]
    async with proxy.session.post(
        proxy.server_path("login"),
        data={"password": proxy.token, "_xsrf": xsrf},
        headers={"Cookie": _cookie_header(cookies)},
        allow_redirects=False,
    ) as response:
        assert response.status in (302, 303)
        cookies.update(_cookies_from(response))
    return cookies


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def test_cookie_post_without_xsrf_is_403(proxy, upstream):
    cookies = await _login_cookies(proxy)
    body = {"model": "qwen2.5:3b", "messages": []}
    headers = {"Cookie": _cookie_header(cookies)}
    async with proxy.request(
        "POST", "chat/completions", auth=False, json=body, headers=headers
    ) as response:
        assert response.status == 403
        document = await response.json()
    assert document["error"]["code"] == "xsrf_failed"
    assert upstream.requests == []


async def test_cookie_post_with_xsrf_forwarded(proxy, upstream):
    cookies = await _login_cookies(proxy)
    body = {"model": "qwen2.5:3b", "messages": []}
    headers = {"Cookie": _cookie_header(cookies), "X-XSRFToken": cookies["_xsrf"]}
    async with proxy.request(
        "POST", "chat/completions", auth=False, json=body, headers=headers
    ) as response:
        assert response.status == 200
    sent = upstream.requests[0].headers
    assert "Cookie" not in sent
    assert "X-XSRFToken" not in sent
    assert sent["Authorization"] == f"Bearer {GATEWAY_KEY}"


async def test_cookie_get_works(proxy, upstream):
    cookies = await _login_cookies(proxy)
    headers = {"Cookie": _cookie_header(cookies)}
    async with proxy.request("GET", "models", auth=False, headers=headers) as response:
        assert response.status == 200


async def test_client_headers_not_forwarded(proxy, upstream):
    headers = {
        "Cookie": "session=abc; _xsrf=def",
        "X-XSRFToken": "def",
        "X-Forwarded-For": "10.0.0.1",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Custom": "value",
        "User-Agent": "test-agent/1.0",
        "Accept": "application/json",
    }
    async with proxy.request("GET", "models", headers=headers) as response:
        assert response.status == 200
    sent = upstream.requests[0].headers
    for name in ("Cookie", "X-XSRFToken", "X-Forwarded-For", "Proxy-Authorization", "X-Custom"):
        assert name not in sent, name
    # The client's own Jupyter token never leaves the server.
    assert proxy.token not in json.dumps(sent)
    assert sent["User-Agent"] == "test-agent/1.0"
    assert sent["Accept"] == "application/json"


async def test_missing_base_url_prefix_is_404(proxy, upstream):
    async with proxy.session.get(
        f"{proxy.server_url}/akko-llm/v1/models", headers=proxy.auth_headers()
    ) as response:
        assert response.status == 404
    assert upstream.requests == []


async def test_connections_reused(proxy, upstream):
    for _ in range(10):
        async with proxy.request("GET", "models") as response:
            assert response.status == 200
    ports = {recorded.client_port for recorded in upstream.requests}
    assert len(upstream.requests) == 10
    assert len(ports) == 1


async def test_query_string_not_forwarded(proxy, upstream):
    """A token in the query string stays on the server, like every other parameter."""
    async with proxy.request(
        "GET", f"models?token={proxy.token}&return_wildcard_routes=true", auth=False
    ) as response:
        assert response.status == 200
    assert upstream.requests[0].query == ""
    assert upstream.paths() == ["/v1/models"]




class TestGatewayByHostName:
    """Cookies are kept per host name (aiohttp ignores those of IP addresses)."""

    @pytest.fixture
    def akko_settings(self, akko_settings, upstream):
        return dict(akko_settings, upstream_url=upstream.url.replace("127.0.0.1", "localhost"))

    async def test_gateway_cookies_not_sent_back(self, proxy, upstream):
        """The upstream client serves everyone who uses the server, so it keeps no cookies."""
        body = {
            "model": "qwen2.5:3b", "messages": [], "x_test": {"set_cookie": "route=a1; Path=/"},
        }
        async with proxy.request("POST", "chat/completions", json=body) as response:
            assert response.status == 200
            # Not relayed to the client either: it could overwrite a Jupyter cookie.
            assert "route=" not in " ".join(response.headers.getall("Set-Cookie", []))
        async with proxy.request("GET", "models") as response:
            assert response.status == 200
        assert [recorded.path for recorded in upstream.requests] == [
            "/v1/chat/completions", "/v1/models",
        ]
        assert "Cookie" not in upstream.requests[1].headers


def test_debug_line_needs_debug_handler():
    """Jupyter's loggers are at DEBUG and their handlers at INFO: then no line is built."""
    server_log = logging.getLogger("akko-test-server")
    extension_log = server_log.getChild("AkkoLLM")
    handler = logging.StreamHandler(io.StringIO())
    server_log.addHandler(handler)
    server_log.propagate = False
    try:
        server_log.setLevel(logging.DEBUG)
        handler.setLevel(logging.INFO)
        assert not _writes_debug(extension_log)
        handler.setLevel(logging.DEBUG)
        assert _writes_debug(extension_log)
        server_log.setLevel(logging.INFO)
        assert not _writes_debug(extension_log)
        # Propagation to the root logger and its handlers counts too.
        server_log.setLevel(logging.DEBUG)
        handler.setLevel(logging.WARNING)
        server_log.propagate = True
        root_handler = logging.StreamHandler(io.StringIO())
        logging.getLogger().addHandler(root_handler)
        try:
            assert _writes_debug(extension_log)
        finally:
            logging.getLogger().removeHandler(root_handler)
    finally:
        server_log.removeHandler(handler)
