"""Secrets stay secret under debug logging, and the limits hold under concurrent load.

`test_secrets_absent_everywhere` runs every kind of traffic the other proxy
tests send (success, streams, upstream errors that quote the key, rejected
keys, failed authentication, bad input, the status endpoint, the soak mix)
with every logger at debug level, then looks for the gateway key, the
server's token and the session cookies in every log line, response, error
message, status output and the environment that kernels inherit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest

from tests.conftest import GATEWAY_KEY
from tests.soak import client_headers, login_cookies, run_soak

CHAT = "chat/completions"


def chat_body(stream: bool = False, **x_test) -> dict:
    return {
        "model": "qwen2.5:3b",
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        "x_test": x_test,
    }


async def _traffic(proxy, cookies: dict[str, str]) -> list[bytes]:
    """Send every kind of request; return each response's headers and body."""
    token = {"Authorization": f"token {proxy.token}"}
    browser = {
        "Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items()),
        "X-XSRFToken": cookies["_xsrf"],
    }
    requests = [
        ("GET", "models", token, None, None),
        ("GET", "models/qwen2.5:3b", token, None, None),
        ("GET", "models/nope", token, None, None),
        ("POST", CHAT, token, chat_body(), None),
        ("POST", CHAT, browser, chat_body(stream=True, chunks=3), None),
        ("POST", CHAT, {"Cookie": browser["Cookie"]}, chat_body(), None),
        ("POST", CHAT, token, chat_body(status=401, error={"message": f"bad {GATEWAY_KEY}"}),
         None),
        ("POST", CHAT, token, chat_body(status=400, error={"message": f"key {GATEWAY_KEY}"}),
         None),
        ("POST", CHAT, token, chat_body(status=502, raw_body=f"<p>{GATEWAY_KEY}</p>"), None),
        ("POST", CHAT, token, chat_body(stream=True, chunks=5, fail_after=2), None),
        ("POST", CHAT, {"Authorization": "token wrong"}, chat_body(), None),
        ("POST", CHAT, {}, chat_body(), None),
        ("POST", CHAT, token, None, b"{not json"),
        ("POST", CHAT, token, {"model": "a\r\nb"}, None),
        ("GET", "key/generate", token, None, None),
        ("GET", "models", {"Authorization": f"Bearer {proxy.token}"}, None, None),
    ]
    answers = []
    for method, path, headers, body, raw in requests:
        headers = dict(headers, **{"Content-Type": "application/json"})
        async with proxy.request(
            method, path, auth=False, headers=headers, json=body, data=raw
        ) as response:
            answers.append(str(dict(response.headers)).encode() + await response.read())

    for path in ("akko-llm/status", "akko-llm/status?refresh=1", "api/status"):
        async with proxy.session.get(proxy.server_path(path), headers=token) as response:
            answers.append(str(dict(response.headers)).encode() + await response.read())

    soak = await run_soak(proxy.session, proxy.endpoint, client_headers(proxy.token, cookies),
                          60, 6, seed=3)
    assert soak.failures == []
    return answers


@pytest.fixture
def akko_settings(request, upstream, tmp_path):
    """The key comes from a file, as in a deployment (a mounted secret).

    NOTE: a key set as c.AkkoLLM.api_key in a config file shows up in the
    server's own debug log, because traitlets logs every config change
    ("Config changed: ...") at debug level. The environment variable and the
    key file are not part of the config and do not show up there.
    """
    key_file = tmp_path / "api-key"
    key_file.write_text(GATEWAY_KEY + "\n")
    settings = {"upstream_url": upstream.url, "api_key_file": str(key_file)}
    marker = request.node.get_closest_marker("akko")
    if marker is not None:
        settings.update(marker.kwargs)
    return settings


async def test_secrets_absent_everywhere(capsys, caplog, proxy, upstream):
    caplog.set_level(logging.DEBUG)
    for name in ("AkkoLLM", "ServerApp", "tornado.access", "tornado.application"):
        logging.getLogger(name).setLevel(logging.DEBUG)

    cookies = await login_cookies(proxy.session, proxy.server_url, proxy.base_url, proxy.token)
    answers = await _traffic(proxy, cookies)

    session_cookies = {
        value for name, value in cookies.items() if name != "_xsrf" and len(value) > 8
    }
    secrets = {"gateway key": GATEWAY_KEY, "server token": proxy.token}
    secrets.update({f"cookie {index}": value for index, value in enumerate(session_cookies)})
    assert session_cookies, "the login set no session cookie"

    # Every record of the traffic, and the extension's own lines from the
    # server's start; those reach stderr only, as the extension's logger does
    # not propagate while the server starts. The rest of the start output is
    # jupyter_server's banner, which shows the token on purpose.
    log_lines = [record.getMessage() for record in caplog.get_records("call")]
    log_lines += [line for line in capsys.readouterr().err.splitlines() if " AkkoLLM]" in line]
    assert any("proxying" in line for line in log_lines)
    assert any("akko-llm" in line and "-> 200" in line for line in log_lines)
    for label, secret in secrets.items():
        for line in log_lines:
            assert secret not in line, f"{label} in a log line: {line[:300]}"

    for label, secret in secrets.items():
        for answer in answers:
            assert secret.encode() not in answer, f"{label} in a response: {answer[:300]!r}"

    # Kernels inherit this process's environment.
    environment = json.dumps(dict(os.environ))
    assert GATEWAY_KEY not in environment
    assert "AKKO_LLM_API_KEY" not in os.environ
    for value in session_cookies:
        assert value not in environment
    # NOTE: without JupyterHub the server's own token is given to its kernels
    # (AKKO_LLM_TOKEN) on purpose, so openai_client() can authenticate; the
    # kernel runs as the same user, who already holds that token.
    holders = [name for name, value in os.environ.items() if proxy.token in value]
    assert holders in ([], ["AKKO_LLM_TOKEN"])

    # The upstream saw none of the client's credentials.
    for recorded in upstream.requests:
        sent = json.dumps(recorded.headers)
        assert proxy.token not in sent
        for value in session_cookies:
            assert value not in sent
        assert "Cookie" not in recorded.headers


# ------------------------------------------------- limits under load


@pytest.mark.akko(max_concurrent_requests=4)
async def test_concurrency_limit_holds_under_load(proxy, upstream):
    async def one(stream: bool) -> int:
        body = chat_body(stream=stream, delay=0.3, chunks=2)
        async with proxy.request("POST", CHAT, json=body) as response:
            await response.read()
            return response.status

    statuses = await asyncio.gather(*(one(index % 2 == 0) for index in range(40)))

    assert set(statuses) <= {200, 429}
    assert statuses.count(429) >= 1
    assert statuses.count(200) == len(upstream.requests)
    # Never more than four requests at the upstream at once.
    events = sorted(
        [(recorded.started_at, 1) for recorded in upstream.requests]
        + [(recorded.finished_at, -1) for recorded in upstream.requests]
    )
    in_flight = peak = 0
    for _time, change in events:
        in_flight += change
        peak = max(peak, in_flight)
    assert peak <= 4
    # All slots are free again.
    async with proxy.request("POST", CHAT, json=chat_body()) as response:
        assert response.status == 200


LIMIT = 64 * 1024


@pytest.mark.akko(max_body_size=LIMIT, max_concurrent_requests=0)
async def test_body_limit_holds_under_load(proxy, upstream):
    async def one(size: int, chunked: bool) -> tuple[int, int]:
        raw = json.dumps({"model": "qwen2.5:3b", "input": "x" * size}).encode()

        async def chunks():
            for start in range(0, len(raw), 8192):
                yield raw[start : start + 8192]

        async with proxy.request(
            "POST", "embeddings", data=chunks() if chunked else raw,
            headers={"Content-Type": "application/json"},
        ) as response:
            await response.read()
            return len(raw), response.status

    sizes = [LIMIT // 2, LIMIT - 100, LIMIT + 1, 4 * LIMIT, 64 * LIMIT]
    jobs = [
        one(size, chunked)
        for _round in range(4)
        for size in sizes
        for chunked in (False, True)
    ]
    results = await asyncio.gather(*jobs)

    for length, status in results:
        assert status == (200 if length <= LIMIT else 413), (length, status)
    assert all(len(recorded.body) <= LIMIT for recorded in upstream.requests)
    assert len(upstream.requests) == sum(1 for length, _ in results if length <= LIMIT)
