"""`configure_spawner` and per-user keys without a running Hub.

The hooks run on real JupyterHub spawners (`LocalProcessSpawner`) whose user is
a stand-in with a name and groups. They talk over HTTP to the key-API test
double (tests/upstreams/litellm_keys.py). A real LiteLLM manages keys only with
a database, whose Prisma engines cannot be downloaded here.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import subprocess
import sys
from types import SimpleNamespace

import pytest
from jupyterhub.spawner import LocalProcessSpawner
from traitlets.config import Config

from akko_jupyter_llm.hub import (
    GatewayKeyError,
    HubConfigError,
    UserKeys,
    configure_spawner,
)
from akko_jupyter_llm.hub.gateway_keys import main as gateway_keys_main
from tests.servers.process import find_free_port
from tests.upstreams.litellm_keys import LiteLLMKeyDouble, ThreadedServer

MASTER_KEY = "sk-config-test-master-key-91b2"
UPSTREAM = "http://127.0.0.1:4000/v1"


@pytest.fixture
def double():
    runner = ThreadedServer(LiteLLMKeyDouble(master_key=MASTER_KEY))
    yield runner.start()
    runner.stop()


@pytest.fixture
def master_key_env(monkeypatch):
    monkeypatch.setenv("LITELLM_MASTER_KEY", MASTER_KEY)


def make_spawner(
    config: Config, name: str, groups=(), profile=None
) -> LocalProcessSpawner:
    user = SimpleNamespace(
        name=name, groups=[SimpleNamespace(name=group) for group in groups]
    )
    spawner = LocalProcessSpawner(user=user, config=config)
    spawner.user_options = {"profile": profile} if profile else {}
    return spawner


def spawn(config: Config, name: str, **kwargs) -> dict[str, str]:
    """Run the configured pre-spawn hook on a new spawner; return its environment."""
    spawner = make_spawner(config, name, **kwargs)
    asyncio.run(spawner.run_pre_spawn_hook())
    return dict(spawner.environment)


# ------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"upstream_url": "akko-akko-litellm:4000/v1"}, "upstream_url"),
        ({"upstream_url": "http://user:pw@gateway:4000/v1"}, "upstream_url"),
        ({"chat_model": ""}, "chat_model"),
        ({"embeddings_model": "nomic embed"}, "embeddings_model"),
        ({"allowed_models": "qwen2.5:3b"}, "allowed_models"),
        ({"groups": {"data-engineering": {"chat": "qwen2.5-coder:7b"}}}, "'chat'"),
        (
            {"groups": {"data-engineering": "qwen2.5-coder:7b"}},
            "groups['data-engineering']",
        ),
        ({"profiles": {"gpu": {"chat_model": 7}}}, "profiles['gpu']['chat_model']"),
        ({"api_key_file": "secrets/key"}, "api_key_file"),
        ({"share_master_key": "yes"}, "share_master_key"),
        ({"user_keys": {"max_budget": 5}}, "user_keys"),
        ({"user_keys": UserKeys(max_budget=-1)}, "UserKeys.max_budget"),
        (
            {"user_keys": UserKeys(budget_duration="monthly", max_budget=5)},
            "budget_duration",
        ),
        ({"user_keys": UserKeys(budget_duration="30d")}, "UserKeys.max_budget"),
        ({"user_keys": UserKeys(rpm_limit=2.5)}, "UserKeys.rpm_limit"),
        ({"user_keys": UserKeys(on_gateway_error="ignore")}, "on_gateway_error"),
        ({"user_keys": UserKeys(on_gateway_error="fallback")}, "api_key_file"),
        ({"user_keys": UserKeys(delivery="file")}, "UserKeys.key_file"),
        ({"user_keys": UserKeys(gateway_url="ftp://gateway")}, "UserKeys.gateway_url"),
        (
            {"user_keys": UserKeys(metadata={"jupyterhub_user": "x"})},
            "UserKeys.metadata",
        ),
    ],
)
def test_bad_argument_named(arguments, named):
    arguments = {"upstream_url": UPSTREAM, **arguments}
    with pytest.raises(HubConfigError) as raised:
        configure_spawner(Config(), **arguments)
    assert named in str(raised.value)


def test_import_needs_no_server_packages():
    # A Hub image has neither jupyter_server nor jupyter-ai, aiohttp or openai.
    code = (
        "import sys\n"
        "blocked = ('jupyter_server', 'jupyter_ai', 'aiohttp', 'openai', 'tornado')\n"
        "for name in blocked:\n"
        "    sys.modules[name] = None\n"
        "from traitlets.config import Config\n"
        "from akko_jupyter_llm.hub import UserKeys, configure_spawner\n"
        "configure_spawner(Config(), upstream_url='http://127.0.0.1:4000/v1',\n"
        "                  user_keys=UserKeys(max_budget=1.0))\n"
        "print('configured')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "configured"


# ------------------------------------------------------- models and environment


def test_group_and_profile_overrides():
    config = Config()
    configure_spawner(
        config,
        upstream_url=UPSTREAM,
        groups={
            "data-engineering": {"chat_model": "qwen2.5-coder:7b"},
            "analysts": {"chat_model": "llama3.2:3b"},
        },
        profiles={"gpu": {"chat_model": "qwen2.5:32b", "embeddings_model": "bge-m3"}},
    )

    everyone = spawn(config, "bob")
    engineer = spawn(config, "alice", groups=["analysts", "data-engineering"])
    on_gpu = spawn(config, "alice", groups=["data-engineering"], profile="gpu")

    assert everyone["JUPYTER_AI_DEFAULT_MODEL"] == "akko:qwen2.5:3b"
    assert everyone["JUPYTER_AI_DEFAULT_PROVIDER"] == "akko"
    assert everyone["AKKO_LLM_EMBEDDINGS_MODEL"] == "nomic-embed-text"
    assert everyone["AKKO_LLM_COMPLETIONS_MODEL"] == "qwen2.5-coder:7b"
    assert everyone["AKKO_LLM_UPSTREAM_URL"] == UPSTREAM
    # The first group in the order of `groups` wins.
    assert engineer["JUPYTER_AI_DEFAULT_MODEL"] == "akko:qwen2.5-coder:7b"
    assert on_gpu["JUPYTER_AI_DEFAULT_MODEL"] == "akko:qwen2.5:32b"
    assert on_gpu["AKKO_LLM_EMBEDDINGS_MODEL"] == "bge-m3"


def test_spawner_environment_kept():
    config = Config()
    config.Spawner.environment = {"TRINO_HOST": "trino", "AKKO_LLM_API_KEY": "sk-stale"}
    configure_spawner(
        config, upstream_url=UPSTREAM, api_key_file="/etc/akko-llm/api-key"
    )

    environment = spawn(config, "bob")

    assert environment["TRINO_HOST"] == "trino"
    assert environment["AKKO_LLM_API_KEY_FILE"] == "/etc/akko-llm/api-key"
    assert "AKKO_LLM_API_KEY" not in environment


def test_previous_hook_runs_first():
    calls = []
    config = Config()
    config.Spawner.pre_spawn_hook = lambda spawner: calls.append(spawner.user.name)
    configure_spawner(config, upstream_url=UPSTREAM)

    spawn(config, "bob")

    assert calls == ["bob"]


def test_master_key_in_environment_stops_spawn(master_key_env):
    config = Config()
    config.Spawner.environment = {"OPENAI_API_KEY": MASTER_KEY}
    configure_spawner(config, upstream_url=UPSTREAM)

    with pytest.raises(GatewayKeyError) as raised:
        spawn(config, "bob")

    assert "OPENAI_API_KEY" in str(raised.value)
    assert MASTER_KEY not in str(raised.value)


def test_share_master_key_warns(master_key_env, caplog):
    config = Config()
    with caplog.at_level(logging.WARNING):
        configure_spawner(config, upstream_url=UPSTREAM, share_master_key=True)
        environment = spawn(config, "bob")

    assert environment["AKKO_LLM_API_KEY"] == MASTER_KEY
    warnings = [record.getMessage() for record in caplog.records]
    assert any(
        "share_master_key=True puts the gateway master key" in line for line in warnings
    )
    assert any("master key into bob's server environment" in line for line in warnings)
    assert all(MASTER_KEY not in line for line in warnings)


# ------------------------------------------------------------- per-user keys


def test_key_reused_and_updated(double, master_key_env):
    config = Config()
    setup = configure_spawner(
        config,
        upstream_url=double.url,
        user_keys=UserKeys(max_budget=1.0, rpm_limit=10),
    )

    first = spawn(config, "alice")["AKKO_LLM_API_KEY"]
    second = spawn(config, "alice")["AKKO_LLM_API_KEY"]
    setup.defaults = setup.defaults.with_override({"chat_model": "qwen2.5-coder:7b"})
    third = spawn(config, "alice")["AKKO_LLM_API_KEY"]

    assert first == second == third
    record = double.record_for_alias("jupyterhub-alice")
    assert record["models"] == ["qwen2.5-coder:7b", "nomic-embed-text"]
    paths = [recorded.path for recorded in double.key_calls()]
    assert paths == [
        "/key/delete",
        "/key/generate",
        "/key/info",
        "/key/info",
        "/key/update",
    ]
    # /key/info gets the key's hash, never the key itself.
    assert all(first not in recorded.query for recorded in double.key_calls())


def test_revoked_key_replaced(double, master_key_env):
    config = Config()
    setup = configure_spawner(config, upstream_url=double.url, user_keys=UserKeys())
    first = spawn(config, "alice")["AKKO_LLM_API_KEY"]

    deleted = asyncio.run(setup.key_manager.revoke("alice"))
    second = spawn(config, "alice")["AKKO_LLM_API_KEY"]

    assert len(deleted) == 1
    assert second != first
    assert double.record_for_alias("jupyterhub-alice")["status"] == "active"


def test_key_file_delivery(double, master_key_env, tmp_path):
    config = Config()
    template = str(tmp_path / "keys" / "{username}" / "api-key")
    configure_spawner(
        config,
        upstream_url=double.url,
        user_keys=UserKeys(delivery="file", key_file=template),
    )

    environment = spawn(config, "alice")

    path = tmp_path / "keys" / "alice" / "api-key"
    assert environment["AKKO_LLM_API_KEY_FILE"] == str(path)
    assert "AKKO_LLM_API_KEY" not in environment
    assert path.read_text().strip().startswith("sk-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("mode", "reason", "words"),
    [
        ("no_database", "no_database", "has no database"),
        ("slow", "timeout", "UserKeys.request_timeout"),
        ("down", "unreachable", "Cannot connect to the gateway"),
        ("wrong_master_key", "master_key_rejected", "rejected the Hub's master key"),
    ],
)
def test_gateway_failure_fails_spawn(double, monkeypatch, mode, reason, words):
    monkeypatch.setenv("LITELLM_MASTER_KEY", MASTER_KEY)
    gateway_url = double.root_url
    if mode == "down":
        gateway_url = f"http://127.0.0.1:{find_free_port()}"
    elif mode == "wrong_master_key":
        monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-old-master-key")
    else:
        double.mode = mode
        double.slow_seconds = 3
    config = Config()
    configure_spawner(
        config,
        upstream_url=double.url,
        user_keys=UserKeys(gateway_url=gateway_url, request_timeout=1),
    )

    with pytest.raises(GatewayKeyError) as raised:
        spawn(config, "alice")

    assert raised.value.reason == reason
    assert words in str(raised.value)
    assert raised.value.jupyterhub_message == str(raised.value)
    assert MASTER_KEY not in str(raised.value)
    assert "sk-old-master-key" not in str(raised.value)


def test_gateway_failure_falls_back(double, master_key_env, caplog):
    double.mode = "no_database"
    config = Config()
    configure_spawner(
        config,
        upstream_url=double.url,
        api_key_file="/etc/akko-llm/shared-key",
        user_keys=UserKeys(on_gateway_error="fallback"),
    )

    with caplog.at_level(logging.WARNING):
        environment = spawn(config, "alice")

    assert environment["AKKO_LLM_API_KEY_FILE"] == "/etc/akko-llm/shared-key"
    assert "AKKO_LLM_API_KEY" not in environment
    warnings = [record.getMessage() for record in caplog.records]
    assert any("starting with the shared credential" in line for line in warnings)
    assert any("has no database" in line for line in warnings)


def test_missing_master_key_fails_spawn(double, monkeypatch):
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    config = Config()
    configure_spawner(config, upstream_url=double.url, user_keys=UserKeys())

    with pytest.raises(GatewayKeyError) as raised:
        spawn(config, "alice")

    assert "LITELLM_MASTER_KEY" in str(raised.value)
    assert double.key_calls() == []


def test_command_line_revoke(double, master_key_env):
    config = Config()
    configure_spawner(config, upstream_url=double.url, user_keys=UserKeys())
    spawn(config, "alice")

    exit_code = gateway_keys_main(["revoke", "alice", "--gateway-url", double.root_url])

    assert exit_code == 0
    assert double.record_for_alias("jupyterhub-alice") is None


def test_command_line_without_master_key(double, monkeypatch):
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    exit_code = gateway_keys_main(["revoke", "alice", "--gateway-url", double.root_url])
    assert exit_code == 2
    assert double.key_calls() == []
