"""Pytest plugin: a real JupyterHub on 127.0.0.1, configured with `configure_spawner`.

Session fixtures, stopped at the end of the session:

- ``gateway_double``: the LiteLLM test double (tests/upstreams/litellm_keys.py)
  in a thread with its own event loop, so that the Hub and the users' servers,
  which are other processes, can reach it. It accepts the master key and the
  virtual keys it minted.
- ``jupyterhub``: a `HubClient` for a JupyterHub with configurable-http-proxy
  from npm, the shared-password authenticator, `SimpleLocalProcessSpawner`
  running ``jupyterhub-singleuser --allow-root`` from this virtual environment,
  an in-memory database, its own pid files and free ports. Its spawner
  configuration: chat model ``qwen2.5:3b`` for everyone, ``qwen2.5-coder:7b``
  for the group ``data-engineering`` (alice), per-user gateway keys that are
  revoked when a server stops, and a failed spawn when the key API fails.

configurable-http-proxy comes from ``.cache/node`` (scripts/test installs it);
without it the Hub tests are skipped with the command that installs it.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.servers.process import ServerProcess, find_free_port, start_server
from tests.upstreams.litellm_keys import LiteLLMKeyDouble, ThreadedServer

REPO_ROOT = Path(__file__).resolve().parent.parent
PROXY_COMMAND = (
    REPO_ROOT / ".cache" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
)
SINGLEUSER_COMMAND = Path(sys.executable).parent / "jupyterhub-singleuser"

MASTER_KEY = "sk-hub-test-master-key-4c1d8e"
USER_PASSWORD = "akko-hub-test-password"
GROUP = "data-engineering"
GROUP_CHAT_MODEL = "qwen2.5-coder:7b"
DEFAULT_CHAT_MODEL = "qwen2.5:3b"

HUB_CONFIG = """
from akko_jupyter_llm.hub import UserKeys, configure_spawner

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite://"
c.JupyterHub.pid_file = {hub_pid_file!r}
c.JupyterHub.cookie_secret_file = {cookie_secret_file!r}
c.ConfigurableHTTPProxy.command = [{proxy_command!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = {proxy_pid_file!r}
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}

c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {user_password!r}
c.Authenticator.allow_all = True

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {home_template!r}
c.Spawner.cmd = [{singleuser_command!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

c.JupyterHub.services = [{{"name": "akko-tests", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "akko-tests",
        "scopes": [
            "admin:users",
            "admin:servers",
            "admin:server_state",
            "admin:groups",
            "tokens",
        ],
        "services": ["akko-tests"],
    }}
]
c.JupyterHub.load_groups = {{{group!r}: {{"users": ["alice"]}}}}

configure_spawner(
    c,
    upstream_url={upstream_url!r},
    chat_model={default_chat_model!r},
    completions_model={default_chat_model!r},
    groups={{
        {group!r}: {{
            "chat_model": {group_chat_model!r},
            "completions_model": {group_chat_model!r},
        }}
    }},
    user_keys=UserKeys(
        max_budget=2.5,
        budget_duration="30d",
        rpm_limit=30,
        tpm_limit=20000,
        max_parallel_requests=4,
        request_timeout=2,
        revoke_on_stop=True,
        on_gateway_error="fail",
    ),
)
"""


class HubClient:
    """Requests to the test Hub: its REST API with the admin token, and user logins."""

    def __init__(self, process: ServerProcess, admin_token: str, directory: Path):
        self.process = process
        self.url = process.url
        self.admin_token = admin_token
        self.directory = directory
        self.log_path = process.log_path

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send a request to ``/hub/api/<path>`` with the admin token."""
        headers = {
            "Authorization": f"token {self.admin_token}",
            **kwargs.pop("headers", {}),
        }
        return requests.request(
            method, f"{self.url}/hub/api/{path}", headers=headers, timeout=60, **kwargs
        )

    def user(self, name: str) -> dict:
        response = self.api("GET", f"users/{name}")
        if response.status_code == 404:
            response = self.api("POST", f"users/{name}")
        response.raise_for_status()
        return response.json()

    def server_ready(self, name: str) -> bool:
        server = self.user(name)["servers"].get("")
        return bool(server and server["ready"])

    def start_server(self, name: str, timeout: float = 120.0) -> requests.Response:
        """Spawn ``name``'s server; return the spawn response once ready or failed."""
        self.user(name)
        response = self.api("POST", f"users/{name}/server")
        if response.status_code not in (201, 202):
            return response
        deadline = time.monotonic() + timeout
        while not self.server_ready(name):
            assert self.process.is_running(), (
                f"JupyterHub exited:\n{self.process.log_tail()}"
            )
            server = self.user(name)["servers"].get("")
            assert server is not None, f"{name}'s server stopped while starting"
            assert time.monotonic() < deadline, (
                f"{name}'s server not ready in {timeout} s"
            )
            time.sleep(0.2)
        return response

    def stop_server(self, name: str, timeout: float = 60.0) -> None:
        response = self.api("DELETE", f"users/{name}/server")
        assert response.status_code in (202, 204, 400), response.text
        deadline = time.monotonic() + timeout
        while self.user(name)["servers"].get(""):
            assert time.monotonic() < deadline, (
                f"{name}'s server did not stop in {timeout} s"
            )
            time.sleep(0.2)

    def server_pid(self, name: str) -> int:
        """Return the PID of ``name``'s running server (from the spawner's state)."""
        response = self.api(
            "GET", f"users/{name}", params={"include_stopped_servers": "0"}
        )
        response.raise_for_status()
        return int(response.json()["servers"][""]["state"]["pid"])

    def server_environment(self, name: str) -> dict[str, str]:
        """Return the environment that ``name``'s server process started with."""
        return read_process_environment(self.server_pid(name))

    def create_token(self, name: str) -> str:
        response = self.api("POST", f"users/{name}/tokens", json={"note": "hub tests"})
        response.raise_for_status()
        return response.json()["token"]

    def login(self, name: str, next_path: str = "/hub/home") -> requests.Session:
        """Log ``name`` in through the login form; return the browser-like session."""
        session = requests.Session()
        session.trust_env = False
        login_url = f"{self.url}/hub/login"
        session.get(login_url, timeout=30).raise_for_status()
        response = session.post(
            login_url,
            params={"next": next_path},
            data={
                "username": name,
                "password": USER_PASSWORD,
                "_xsrf": session.cookies.get("_xsrf", path="/hub/"),
            },
            timeout=60,
        )
        response.raise_for_status()
        assert session.cookies.get("jupyterhub-session-id"), (
            "login set no session cookie"
        )
        return session

    def hub_log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="session")
def gateway_double() -> Iterator[LiteLLMKeyDouble]:
    runner = ThreadedServer(LiteLLMKeyDouble(master_key=MASTER_KEY))
    double = runner.start()
    yield double
    runner.stop()


@pytest.fixture(scope="session")
def jupyterhub(
    gateway_double: LiteLLMKeyDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubClient]:
    if not PROXY_COMMAND.exists():
        pytest.skip(
            f"configurable-http-proxy is not installed at {PROXY_COMMAND}; run "
            "`npm install --prefix .cache/node configurable-http-proxy@5` "
            "(scripts/test does)"
        )
    directory = tmp_path_factory.mktemp("jupyterhub")
    admin_token = secrets.token_hex(16)
    ports = {"hub_port": find_free_port(), "proxy_api_port": find_free_port()}
    config_path = directory / "jupyterhub_config.py"

    def command(proxy_port: int) -> list[str]:
        config_path.write_text(
            HUB_CONFIG.format(
                proxy_port=proxy_port,
                **ports,
                hub_pid_file=str(directory / "jupyterhub.pid"),
                proxy_pid_file=str(directory / "proxy.pid"),
                cookie_secret_file=str(directory / "cookie_secret"),
                proxy_command=str(PROXY_COMMAND),
                proxy_token=secrets.token_hex(16),
                user_password=USER_PASSWORD,
                home_template=str(directory / "home" / "{username}"),
                singleuser_command=str(SINGLEUSER_COMMAND),
                admin_token=admin_token,
                group=GROUP,
                upstream_url=gateway_double.url,
                default_chat_model=DEFAULT_CHAT_MODEL,
                group_chat_model=GROUP_CHAT_MODEL,
            ),
            encoding="utf-8",
        )
        return [sys.executable, "-m", "jupyterhub", "-f", str(config_path)]

    process = start_server(
        "jupyterhub",
        command,
        "/hub/health",
        directory / "jupyterhub.log",
        env={"LITELLM_MASTER_KEY": MASTER_KEY},
        cwd=directory,
        timeout=90,
    )
    hub = HubClient(process, admin_token, directory)
    yield hub

    # Stop the users' servers through the Hub first: they run in sessions of
    # their own, so stopping the Hub's process group would not reach them.
    try:
        for user in hub.api("GET", "users").json():
            if user["servers"].get(""):
                hub.stop_server(user["name"])
    finally:
        process.stop(timeout=20)


def read_process_environment(pid: int) -> dict[str, str]:
    """Return the environment a process started with, from /proc (Linux)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    environment = {}
    for item in raw.split(b"\0"):
        name, separator, value = item.partition(b"=")
        if separator:
            environment[name.decode()] = value.decode("utf-8", "replace")
    return environment
