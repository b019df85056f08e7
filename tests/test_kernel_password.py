"""openai_client() in a kernel of a server with a password and no token.

Such a server gives its kernels no ``AKKO_LLM_TOKEN``, and code cannot log in
with a password, so the client must fail at once with what to do instead of
sending requests that get HTTP 403. A server with authentication turned off
needs no token, and the client must keep working there.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from jupyter_server.auth import passwd

from tests.test_kernel_client import run_in_kernel

PASSWORD = "correct horse battery staple"

KERNEL_CODE = """
import json
from akko_jupyter_llm import async_openai_client, openai_client

def error_of(factory, **kwargs):
    try:
        factory(max_retries=0, **kwargs)
    except RuntimeError as error:
        return str(error)
    return None

result = {
    "sync": error_of(openai_client),
    "async": error_of(async_openai_client),
    "explicit_key": error_of(openai_client, api_key="a-token-from-elsewhere"),
}
print(json.dumps(result))
"""

MODELS_CODE = """
import json
from akko_jupyter_llm import openai_client
client = openai_client(max_retries=0)
print(json.dumps([model.id for model in client.models.list()]))
"""


@pytest.fixture
def jp_argv():
    # pytest-jupyter gives every server a token unless the command line clears it.
    return ["--IdentityProvider.token="]


@pytest.fixture
def kernel_environment(monkeypatch):
    """Remove tokens that this process' environment would pass on to kernels."""
    monkeypatch.delenv("AKKO_LLM_TOKEN", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)


@pytest.fixture
def server_password() -> str | None:
    """The server's password, which a test parametrizes. None means no password."""
    return None


@pytest.fixture
def jp_server_config(akko_settings, server_password):
    config = {
        "ServerApp": {
            "jpserver_extensions": {
                "akko_jupyter_llm": True,
                "jupyter_server_terminals": False,
            },
        },
        "AkkoLLM": akko_settings,
    }
    if server_password is not None:
        config["ServerApp"]["allow_unauthenticated_access"] = False
        config["PasswordIdentityProvider"] = {"hashed_password": passwd(server_password)}
    return config


def last_json_line(output: str):
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.parametrize("server_password", [PASSWORD])
async def test_password_server_client_explains(
    kernel_environment, jp_serverapp, http_server_client, upstream
):
    await asyncio.sleep(0)  # Let the extension publish the endpoint for kernels.
    assert jp_serverapp.identity_provider.token == ""
    assert jp_serverapp.identity_provider.auth_enabled

    result = last_json_line(await run_in_kernel(jp_serverapp, KERNEL_CODE))

    for name in ("sync", "async"):
        message = result[name]
        assert message is not None, f"{name}: no error at call time"
        assert "requires authentication" in message
        assert "AKKO_LLM_TOKEN is not set" in message
        assert "password alone" in message
        assert "JUPYTER_TOKEN environment variable" in message
        assert "api_key=" in message
    assert result["explicit_key"] is None
    assert upstream.requests == []


async def test_server_without_auth_client_works(
    kernel_environment, jp_serverapp, http_server_client, upstream
):
    await asyncio.sleep(0)
    assert not jp_serverapp.identity_provider.auth_enabled

    models = last_json_line(await run_in_kernel(jp_serverapp, MODELS_CODE))

    assert models == ["qwen2.5:3b", "qwen2.5-coder:7b", "nomic-embed-text"]
