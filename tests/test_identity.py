"""The user's identity sent to the gateway: the body's user field and LiteLLM's header."""

from __future__ import annotations

import getpass
import json

import pytest

from akko_jupyter_llm.identity import with_user_field


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"model": "m"}', b'{"model": "m","user":"alice"}'),
        (b'{"model": "m"}\n', b'{"model": "m","user":"alice"}\n'),
        (b"{}", b'{"user": "alice"}'),
        (b'{"model":"m","user":"mallory"}', b'{"model":"m","user":"alice"}'),
    ],
)
def test_with_user_field(body, expected):
    result = with_user_field(body, json.loads(body), "alice")
    assert result == expected
    assert json.loads(result)["user"] == "alice"


def test_with_user_field_non_ascii_name():
    body = b'{"model": "m", "messages": [{"role": "user", "content": "caf\\u00e9"}]}'
    result = with_user_field(body, json.loads(body), "jos\u00e9")
    assert json.loads(result) == {**json.loads(body), "user": "jos\u00e9"}


@pytest.mark.akko(user_identity="on")
async def test_identity_sent_and_client_user_replaced(proxy, upstream):
    body = {"model": "qwen2.5:3b", "messages": [], "user": "someone-else"}
    async with proxy.request("POST", "chat/completions", json=body) as response:
        assert response.status == 200
    sent = upstream.requests[0]
    # A standalone server names its owner: the operating-system account.
    assert sent.json["user"] == getpass.getuser()
    assert sent.headers["X-LiteLLM-End-User-Id"] == getpass.getuser()


@pytest.mark.akko(user_identity="on")
async def test_identity_header_not_taken_from_client(proxy, upstream):
    headers = {"X-LiteLLM-End-User-Id": "mallory", "X-LiteLLM-Customer-Id": "mallory"}
    async with proxy.request("GET", "models", headers=headers) as response:
        assert response.status == 200
    sent = upstream.requests[0].headers
    assert sent["X-LiteLLM-End-User-Id"] == getpass.getuser()
    assert "X-LiteLLM-Customer-Id" not in sent


@pytest.mark.akko(user_identity="off")
async def test_identity_off_leaves_body_alone(proxy, upstream):
    raw = b'{"model": "qwen2.5:3b", "messages": [], "user": "as-sent"}'
    async with proxy.request(
        "POST", "chat/completions", data=raw, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 200
    assert upstream.requests[0].body == raw
    assert "X-LiteLLM-End-User-Id" not in upstream.requests[0].headers


async def test_identity_auto_is_off_outside_jupyterhub(proxy, upstream, monkeypatch):
    raw = b'{"model": "qwen2.5:3b", "messages": []}'
    async with proxy.request(
        "POST", "chat/completions", data=raw, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 200
    assert upstream.requests[0].body == raw


@pytest.mark.akko(user_identity="sometimes")
async def test_identity_bad_value_reported(proxy, upstream):
    async with proxy.request("GET", "models") as response:
        assert response.status == 503
        document = await response.json()
    assert "c.AkkoLLM.user_identity" in document["error"]["message"]
    assert "'sometimes'" in document["error"]["message"]
