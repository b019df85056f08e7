"""Diagnostics against the real LiteLLM gateway and the real llama.cpp server.

The status endpoint and ``akko-llm doctor`` must find everything in order on
the gateway that the tests start: every platform model served, the embedding
model recognised by LiteLLM's ``model_info.mode``, and a streamed reply from
the tiny model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.models

CLI_TIMEOUT_SECONDS = 120


@pytest.fixture
def akko_settings(litellm_gateway) -> dict:
    """Point the test's Jupyter server at the real gateway with its master key."""
    return {
        "upstream_url": litellm_gateway.base_url,
        "api_key": litellm_gateway.master_key,
    }


def cli_environment(**variables: str) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AKKO_LLM_", "JUPYTER_AI_"))
    }
    environment.update(variables)
    return environment


def run_doctor(*args: str, env: dict[str, str]) -> tuple[int, dict, str]:
    result = subprocess.run(
        [sys.executable, "-m", "akko_jupyter_llm.cli", "doctor", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT_SECONDS,
    )
    return result.returncode, json.loads(result.stdout), result.stderr


def checks_of(document: dict) -> dict[str, dict]:
    return {check["name"]: check for check in document["checks"]}


async def test_status_endpoint_litellm_all_ok(proxy, litellm_gateway, caplog):
    async with proxy.session.post(
        proxy.server_path("akko-llm/status"), headers=proxy.auth_headers()
    ) as response:
        status = response.status
        document = await response.json()
    checks = checks_of(document)
    models = {model["id"]: model for model in document["models"]}

    assert status == 200
    assert document["status"] == "ok", json.dumps(document["checks"], indent=2)
    assert {check["status"] for check in document["checks"]} == {"ok"}
    assert "live_test" in checks
    assert checks["live_test"]["details"]["tokens"] > 0
    assert set(models) == set(litellm_gateway.model_ids)
    assert models["nomic-embed-text"]["kind"] == "embedding"
    assert models["nomic-embed-text"]["kind_source"] == "model_info"
    assert models["qwen2.5:3b"]["kind"] == "chat"
    assert litellm_gateway.master_key not in json.dumps(document)
    assert litellm_gateway.master_key not in caplog.text


def test_doctor_litellm_all_ok(litellm_gateway, tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text(litellm_gateway.master_key)

    code, document, stderr = run_doctor(
        "--upstream-url", litellm_gateway.base_url,
        "--api-key-file", str(key_file), "--live",
        env=cli_environment(),
    )

    assert code == 0, json.dumps(document, indent=2) + stderr
    assert {check["status"] for check in document["checks"]} == {"ok"}
    assert checks_of(document)["live_test"]["details"]["model"] == "qwen2.5:3b"
    assert litellm_gateway.master_key not in json.dumps(document) + stderr


def test_doctor_litellm_wrong_key(litellm_gateway):
    environment = cli_environment(
        AKKO_LLM_UPSTREAM_URL=litellm_gateway.base_url,
        AKKO_LLM_API_KEY="sk-test-regenerated-by-helm",
    )

    code, document, _ = run_doctor(env=environment)
    key = checks_of(document)["key_accepted"]

    assert code == 1
    assert key["status"] == "error"
    # LiteLLM 1.108 without a database answers a wrong key with HTTP 400.
    assert "HTTP 400" in key["message"]
    assert "Helm upgrade" in key["hint"]
    assert "sk-test-regenerated-by-helm" not in json.dumps(document)


def test_doctor_llama_server_without_key(llama_server):
    environment = cli_environment(AKKO_LLM_UPSTREAM_URL=llama_server.base_url)

    code, document, stderr = run_doctor("--live", env=environment)
    models = {model["id"]: model for model in document["models"]}

    assert code == 0, json.dumps(document, indent=2) + stderr
    assert {check["status"] for check in document["checks"]} == {"ok"}
    assert models["nomic-embed-text"]["kind"] == "embedding"
    assert models["nomic-embed-text"]["kind_source"] == "name"
    assert "without a key" in checks_of(document)["key_accepted"]["message"]


def test_models_litellm(litellm_gateway):
    environment = cli_environment(
        AKKO_LLM_UPSTREAM_URL=litellm_gateway.base_url,
        AKKO_LLM_API_KEY=litellm_gateway.master_key,
    )

    result = subprocess.run(
        [sys.executable, "-m", "akko_jupyter_llm.cli", "models"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=CLI_TIMEOUT_SECONDS,
    )
    rows = dict(line.split() for line in result.stdout.splitlines()[1:])

    assert result.returncode == 0, result.stderr
    assert rows == {
        "qwen2.5:3b": "chat",
        "qwen2.5-coder:7b": "chat",
        "nomic-embed-text": "embedding",
        "ollama-test": "chat",
    }
