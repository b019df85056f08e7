"""A gateway key that cannot be sent in an HTTP header, on a real Jupyter server.

A key with a line break, another control character, a space or a non-ASCII
character in it, or a key file that is not UTF-8, must not reach aiohttp,
which rejects such a header with an exception. The proxy responds with 503
``gateway_key_unavailable`` and the status endpoint reports the key check as
failed. Neither shows the key, nor logs it.
"""

from __future__ import annotations

import logging

import pytest

from tests.conftest import GATEWAY_KEY

CHAT = "chat/completions"
INJECTED_HEADER = "X-Evil: 1"
# Position of the first character after the key, counted from 1.
AFTER_KEY = len(GATEWAY_KEY) + 1

# Each case of an invalid key, with the text that its error message must contain.
CASES = {
    "file-line-break": (
        "is invalid: it contains a line break (LF) at character "
        f"{AFTER_KEY} of the key"
    ),
    "file-not-utf8": f"is not valid UTF-8 text: byte {AFTER_KEY} of the file",
    "environment-line-break": (
        "The gateway key in c.AkkoLLM.api_key (AKKO_LLM_API_KEY) is invalid: it "
        f"contains a line break (LF) at character {AFTER_KEY} of the key"
    ),
}


@pytest.fixture
def akko_settings(request, upstream, tmp_path, monkeypatch) -> dict:
    """Settings with the invalid key of the test's ``case`` parameter."""
    case = request.node.callspec.params["case"]
    settings = {"upstream_url": upstream.url}
    key_file = tmp_path / "api-key"
    if case == "file-line-break":
        key_file.write_text(f"{GATEWAY_KEY}\n{INJECTED_HEADER}\n")
        settings["api_key_file"] = str(key_file)
    elif case == "file-not-utf8":
        key_file.write_bytes(GATEWAY_KEY.encode() + b"\xff\n")
        settings["api_key_file"] = str(key_file)
    else:
        # The variable, unlike c.AkkoLLM.api_key, is not in the config that
        # traitlets logs at debug level.
        monkeypatch.setenv("AKKO_LLM_API_KEY", f"{GATEWAY_KEY}\n{INJECTED_HEADER}")
    return settings


def assert_no_secret(text: str) -> None:
    assert GATEWAY_KEY not in text
    assert INJECTED_HEADER not in text


@pytest.mark.parametrize("case", list(CASES))
async def test_proxy_rejects_invalid_key(proxy, upstream, caplog, capsys, case):
    caplog.set_level(logging.DEBUG)
    body = {"model": "qwen2.5:3b", "messages": [{"role": "user", "content": "hi"}]}

    async with proxy.request("POST", CHAT, json=body) as response:
        status = response.status
        document = await response.json()
    async with proxy.request("GET", "models") as response:
        models_status = response.status
    error = document["error"]

    assert status == 503
    assert models_status == 503
    assert error["code"] == "gateway_key_unavailable"
    assert CASES[case] in error["message"]
    assert "ask the platform admin" in error["message"]
    assert_no_secret(error["message"])
    assert upstream.requests == []
    assert_no_secret(caplog.text)
    assert_no_secret(capsys.readouterr().err)
    assert "Forbidden control character" not in caplog.text


@pytest.mark.parametrize("case", list(CASES))
async def test_status_reports_invalid_key(proxy, upstream, caplog, case):
    caplog.set_level(logging.DEBUG)

    async with proxy.session.get(
        proxy.server_path("akko-llm/status"), headers=proxy.auth_headers()
    ) as response:
        status = response.status
        text = await response.text()
        document = await response.json()
    checks = {check["name"]: check for check in document["checks"]}
    key_check = checks["key_accepted"]

    assert status == 200
    assert document["status"] == "error"
    assert checks["gateway_reachable"]["status"] == "ok"
    assert key_check["status"] == "error"
    assert CASES[case] in key_check["message"]
    assert "The check sent no key" in key_check["hint"]
    assert_no_secret(text)
    assert_no_secret(caplog.text)
    # The checks sent the gateway no key at all.
    assert all("Authorization" not in request.headers for request in upstream.requests)
