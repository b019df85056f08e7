"""The endpoint under a real JupyterHub whose spawner `configure_spawner` configured.

One Hub runs for the whole session (tests/hub_fixtures.py). alice is in the
group data-engineering, bob and erin are in no group. Every user's server gets
a per-user gateway key from the key-API test double, because a real LiteLLM
needs a database for that (see tests/upstreams/litellm_keys.py). The double is
also the upstream, so each request that reaches it shows which key it carried.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import requests
import websocket

from tests.hub_fixtures import (
    DEFAULT_CHAT_MODEL,
    GROUP_CHAT_MODEL,
    MASTER_KEY,
    HubClient,
    read_process_environment,
)

KERNEL_CODE = """
import json, os
from akko_jupyter_llm import openai_client

client = openai_client(max_retries=0)
models = [model.id for model in client.models.list()]
server_pid = os.getppid()
with open(f"/proc/{server_pid}/cmdline", "rb") as cmdline:
    server_command = cmdline.read().replace(b"\\0", b" ").decode()
print(json.dumps({"models": models, "environment": dict(os.environ),
                  "server_pid": server_pid, "server_command": server_command}))
"""


def run_in_kernel(hub: HubClient, username: str, token: str, code: str) -> str:
    """Start a kernel in the user's server, run ``code``, return its stdout."""
    server_url = f"{hub.url}/user/{username}"
    headers = {"Authorization": f"token {token}"}
    response = requests.post(
        f"{server_url}/api/kernels", headers=headers, json={}, timeout=60
    )
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    channel = websocket.create_connection(
        f"ws{server_url.removeprefix('http')}/api/kernels/{kernel_id}/channels",
        header=[f"Authorization: token {token}"],
        timeout=60,
    )
    try:
        message_id = uuid.uuid4().hex
        channel.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": message_id,
                        "msg_type": "execute_request",
                        "username": username,
                        "session": uuid.uuid4().hex,
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                    },
                    "channel": "shell",
                }
            )
        )
        output = []
        while True:
            message = json.loads(channel.recv())
            if message.get("parent_header", {}).get("msg_id") != message_id:
                continue
            kind = message["msg_type"]
            if kind == "stream":
                output.append(message["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                return "".join(output)
    finally:
        channel.close()
        requests.delete(
            f"{server_url}/api/kernels/{kernel_id}", headers=headers, timeout=60
        )


# Headers a browser adds to a fetch() from a page of the same origin. JupyterHub
# 4.1 and later check the XSRF token on such requests, GETs included.
FETCH_HEADERS = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}


def bearer_key(recorded) -> str:
    return recorded.headers.get("Authorization", "").removeprefix("Bearer ")


@pytest.fixture(scope="module")
def alice(jupyterhub: HubClient) -> HubClient:
    """The Hub, with alice's server running."""
    if not jupyterhub.server_ready("alice"):
        response = jupyterhub.start_server("alice")
        assert response.status_code in (201, 202), response.text
    return jupyterhub


def browser_login(hub: HubClient, username: str):
    """Log in and open a page of the user's server, as a browser does."""
    # A page of jupyter_server itself, so that the test needs no JupyterLab.
    notes = hub.directory / "home" / username / "notes.txt"
    notes.write_text("notes\n", encoding="utf-8")
    return hub.login(username, next_path=f"/user/{username}/view/notes.txt")


@pytest.fixture(scope="module")
def alice_kernel(alice: HubClient) -> dict:
    """What a kernel in alice's server reports: models, environment, server process."""
    token = alice.create_token("alice")
    output = run_in_kernel(alice, "alice", token, KERNEL_CODE)
    return json.loads(output.strip().splitlines()[-1])


def test_cookie_with_xsrf_lists_models(alice, gateway_double):
    session = browser_login(alice, "alice")
    xsrf = session.cookies.get("_xsrf", path="/user/alice/")
    assert xsrf, f"no _xsrf cookie for /user/alice/: {session.cookies}"
    url = f"{alice.url}/user/alice/akko-llm/v1/models"

    response = session.get(
        url, headers={**FETCH_HEADERS, "X-XSRFToken": xsrf}, allow_redirects=False
    )

    assert response.status_code == 200, response.text
    model_ids = [model["id"] for model in response.json()["data"]]
    assert model_ids == [GROUP_CHAT_MODEL, "nomic-embed-text"]
    forwarded = gateway_double.requests[-1]
    assert forwarded.path == "/v1/models"
    assert bearer_key(forwarded) != MASTER_KEY
    record = gateway_double.record_for_alias("jupyterhub-alice")
    assert record is not None
    assert (
        hashlib.sha256(bearer_key(forwarded).encode()).hexdigest()
        in gateway_double.records
    )


def test_cookie_without_xsrf_forbidden(alice):
    session = browser_login(alice, "alice")
    response = session.get(
        f"{alice.url}/user/alice/akko-llm/v1/models",
        headers=FETCH_HEADERS,
        allow_redirects=False,
    )
    assert response.status_code == 403


def test_kernel_token_lists_models(alice_kernel):
    assert alice_kernel["models"] == [GROUP_CHAT_MODEL, "nomic-embed-text"]
    assert "jupyterhub-singleuser" in alice_kernel["server_command"]


def test_group_defaults_reach_server(alice, alice_kernel, gateway_double):
    server_environment = alice.server_environment("alice")
    for environment in (server_environment, alice_kernel["environment"]):
        assert environment["JUPYTER_AI_DEFAULT_PROVIDER"] == "akko"
        assert environment["JUPYTER_AI_DEFAULT_MODEL"] == f"akko:{GROUP_CHAT_MODEL}"
        assert environment["AKKO_LLM_COMPLETIONS_MODEL"] == GROUP_CHAT_MODEL
        assert environment["AKKO_LLM_EMBEDDINGS_MODEL"] == "nomic-embed-text"
        assert environment["AKKO_LLM_UPSTREAM_URL"] == gateway_double.url


def test_no_master_key_in_environments(alice, alice_kernel):
    server_environment = alice.server_environment("alice")
    assert alice_kernel["server_pid"] == alice.server_pid("alice")
    for environment in (server_environment, alice_kernel["environment"]):
        leaking = sorted(
            name for name, value in environment.items() if MASTER_KEY in value
        )
        assert leaking == []
    # The server has alice's own key, and keeps it away from her kernels.
    assert server_environment["AKKO_LLM_API_KEY"].startswith("sk-")
    assert "AKKO_LLM_API_KEY" not in alice_kernel["environment"]


def test_other_user_cookie_forbidden(alice):
    session = alice.login("bob")
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    response = session.get(
        f"{alice.url}/user/alice/akko-llm/v1/models",
        headers={**FETCH_HEADERS, "X-XSRFToken": xsrf or ""},
        allow_redirects=False,
    )
    assert response.status_code == 403


def test_other_user_token_forbidden(alice):
    token = alice.create_token("bob")
    response = requests.get(
        f"{alice.url}/user/alice/akko-llm/v1/models",
        headers={"Authorization": f"token {token}"},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 403


def test_no_credentials_forbidden(alice):
    response = requests.get(
        f"{alice.url}/user/alice/akko-llm/v1/models", allow_redirects=False, timeout=30
    )
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("application/json")


def test_user_key_minted_used_revoked(jupyterhub, gateway_double):
    response = jupyterhub.start_server("erin")
    assert response.status_code in (201, 202), response.text

    record = gateway_double.record_for_alias("jupyterhub-erin")
    assert record is not None
    assert record["models"] == [DEFAULT_CHAT_MODEL, "nomic-embed-text"]
    assert record["metadata"] == {"jupyterhub_user": "erin"}
    assert record["max_budget"] == 2.5
    assert record["budget_duration"] == "30d"
    assert record["rpm_limit"] == 30
    assert record["tpm_limit"] == 20000
    assert record["max_parallel_requests"] == 4
    environment = jupyterhub.server_environment("erin")
    erin_key = environment["AKKO_LLM_API_KEY"]
    assert (
        gateway_double.records[hashlib.sha256(erin_key.encode()).hexdigest()] is record
    )
    assert environment["JUPYTER_AI_DEFAULT_MODEL"] == f"akko:{DEFAULT_CHAT_MODEL}"

    token = jupyterhub.create_token("erin")
    reply = requests.post(
        f"{jupyterhub.url}/user/erin/akko-llm/v1/chat/completions",
        headers={"Authorization": f"token {token}"},
        json={
            "model": DEFAULT_CHAT_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
        },
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    forwarded = gateway_double.requests[-1]
    assert forwarded.path == "/v1/chat/completions"
    assert bearer_key(forwarded) == erin_key

    jupyterhub.stop_server("erin")

    assert record["status"] == "deleted"
    rejected = requests.get(
        f"{gateway_double.url}/models",
        headers={"Authorization": f"Bearer {erin_key}"},
        timeout=30,
    )
    assert rejected.status_code == 401


def test_spawn_fails_without_gateway_database(jupyterhub, gateway_double):
    gateway_double.mode = "no_database"
    try:
        response = jupyterhub.start_server("carol")
    finally:
        gateway_double.mode = "ok"

    assert response.status_code == 500
    message = response.json()["message"]
    assert "has no database" in message
    assert "DATABASE_URL" in message
    assert jupyterhub.user("carol")["servers"] == {}
    assert "no gateway key for carol, so the spawn fails" in jupyterhub.hub_log()


def test_hub_log_has_no_master_key(alice, alice_kernel):
    assert "Minted a gateway key for alice" in alice.hub_log()
    assert MASTER_KEY not in alice.hub_log()


def test_hub_process_environment_has_master_key(jupyterhub):
    # The check above means something only if the Hub holds the key.
    hub_environment = read_process_environment(jupyterhub.process.pid)
    assert hub_environment["LITELLM_MASTER_KEY"] == MASTER_KEY
