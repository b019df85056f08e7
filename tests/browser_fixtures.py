"""Fixtures for the JupyterLab UI tests: a real JupyterLab and a real Chromium.

- ``lab_upstream``: the OpenAI-compatible test upstream, on 127.0.0.1 in a thread
  of its own, so that it responds while a test blocks on the browser.
- ``start_lab``: starts ``jupyter lab`` as a subprocess on a free port of
  127.0.0.1 with a token, pointed at a given upstream URL. Its configuration,
  user settings and workspaces live in a temporary folder, and the extension is
  loaded from this repository's build (``akko_jupyter_llm/labextension``), so a
  stale copy in the environment cannot hide a change.
- ``healthy_lab`` and ``down_lab``: one JupyterLab each for the module, the
  first with the test upstream, the second with a port of 127.0.0.1 on which
  nothing listens.
- ``browser`` and ``page``: Debian's Chromium (``/usr/bin/chromium``, or
  ``AKKO_TEST_CHROMIUM``) driven by Playwright without a browser download.

Screenshots go to ``test-artifacts/jupyterlab/``. With ``AKKO_UPDATE_DOCS_IMAGES=1``
the screenshots meant for the documentation are copied to ``docs/images/`` too.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.process import HOST, ServerProcess, start_server
from tests.upstreams.openai_compat import OpenAIUpstream

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
LABEXTENSION_BUILD = REPOSITORY_ROOT / "akko_jupyter_llm" / "labextension"
LABEXTENSION_NAME = "akko-jupyter-llm"
ARTIFACTS = REPOSITORY_ROOT / "test-artifacts" / "jupyterlab"
DOCS_IMAGES = REPOSITORY_ROOT / "docs" / "images"

CHROMIUM = Path(os.environ.get("AKKO_TEST_CHROMIUM", "/usr/bin/chromium"))
# Keep Chromium from reaching any host besides the JupyterLab under test.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}
LAB_TOKEN = "ui-test-token-4b1d"
GATEWAY_KEY = "sk-ui-test-gateway-key"


class ThreadedUpstream:
    """`OpenAIUpstream` served by an event loop in a daemon thread."""

    def __init__(self, expected_key: str) -> None:
        self.server = OpenAIUpstream(expected_key=expected_key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ui-test-upstream", daemon=True
        )

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> ThreadedUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@dataclass
class LabServer:
    """A running JupyterLab: its process, root URL and token."""

    process: ServerProcess
    token: str
    upstream_url: str

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def lab_url(self) -> str:
        # reset: start from an empty workspace, not the layout of the last test.
        return f"{self.url}/lab?reset&token={self.token}"

    def put_settings(self, plugin_id: str, settings: dict) -> None:
        """Store the user settings of ``plugin_id`` through the settings REST API."""
        request = urllib.request.Request(
            f"{self.url}/lab/api/settings/{plugin_id}",
            data=json.dumps({"raw": json.dumps(settings)}).encode(),
            headers={
                "Authorization": f"token {self.token}",
                "Content-Type": "application/json",
            },
            method="PUT",
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            assert response.status == 204, f"PUT settings returned {response.status}"


def _write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))


def _lab_environment(root: Path, upstream_url: str) -> dict[str, str | None]:
    """Write the configuration of a test JupyterLab under ``root``; return its env."""
    config_dir = root / "config"
    data_dir = root / "data"
    settings_dir = root / "user-settings"

    # The extension under test comes from this repository's build. JUPYTER_PATH
    # is searched before the environment's share/jupyter, so this copy wins.
    extension_link = data_dir / "labextensions" / LABEXTENSION_NAME
    extension_link.parent.mkdir(parents=True)
    extension_link.symlink_to(LABEXTENSION_BUILD, target_is_directory=True)

    _write_json(
        config_dir / "jupyter_server_config.json",
        {
            "ServerApp": {
                "jpserver_extensions": {"akko_jupyter_llm": True, "jupyter_ai": False},
                "allow_unauthenticated_access": False,
            },
            "AkkoLLM": {"upstream_url": upstream_url, "api_key": GATEWAY_KEY},
        },
    )
    # jupyter-ai's sidebar is not under test, and it needs its server extension.
    _write_json(
        config_dir / "labconfig" / "page_config.json",
        {"disabledExtensions": {"@jupyter-ai/core": True}},
    )
    # The news and update checks would fetch from the internet and show a toast.
    _write_json(
        settings_dir
        / "@jupyterlab"
        / "apputils-extension"
        / "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
    )

    environment: dict[str, str | None] = {
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_PATH": str(data_dir),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings_dir),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
    }
    for name in os.environ:
        if name.startswith(("AKKO_LLM_", "JUPYTER_AI_")):
            environment[name] = None
    return environment


@pytest.fixture(scope="module")
def lab_upstream() -> Iterator[ThreadedUpstream]:
    upstream = ThreadedUpstream(GATEWAY_KEY).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def start_lab(tmp_path_factory):
    """Return a function that starts a JupyterLab for an upstream URL."""
    if not (LABEXTENSION_BUILD / "static" / "style.js").is_file():
        pytest.fail(
            f"The JupyterLab extension is not built: {LABEXTENSION_BUILD} has no "
            "static/style.js. Build it with `npm install && npm run build:prod` in "
            "labextension/, or with `pip install -e .`."
        )
    started: list[ServerProcess] = []
    jupyter_lab = Path(sys.executable).with_name("jupyter-lab")

    def start(name: str, upstream_url: str) -> LabServer:
        root = tmp_path_factory.mktemp(f"lab-{name}")
        environment = _lab_environment(root, upstream_url)
        notebooks = root / "notebooks"
        notebooks.mkdir()

        def command(port: int) -> list[str]:
            return [
                str(jupyter_lab),
                "--no-browser",
                "--allow-root",
                f"--ip={HOST}",
                f"--port={port}",
                "--port-retries=0",
                f"--IdentityProvider.token={LAB_TOKEN}",
                f"--ServerApp.root_dir={notebooks}",
                # window.jupyterapp lets a test run JupyterLab commands.
                "--LabApp.expose_app_in_browser=True",
            ]

        process = start_server(
            f"JupyterLab ({name})",
            command,
            f"/api/status?token={LAB_TOKEN}",
            ARTIFACTS / f"lab-{name}.log",
            env=environment,
            cwd=root,
            timeout=90,
        )
        started.append(process)
        return LabServer(process=process, token=LAB_TOKEN, upstream_url=upstream_url)

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def healthy_lab(start_lab, lab_upstream) -> LabServer:
    return start_lab("healthy", lab_upstream.url)


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 that refuses connections: bound, but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved:
        reserved.bind((HOST, 0))
        yield reserved.getsockname()[1]


@pytest.fixture(scope="module")
def down_lab(start_lab, closed_port) -> LabServer:
    return start_lab("down", f"http://{HOST}:{closed_port}/v1")


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module.

    Playwright's sync API runs an asyncio loop in the main thread while it is
    open, so it is closed at the end of the module, before other modules run
    their own loops.
    """
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: install Debian's package with "
            "`apt-get install chromium` (scripts/test does), or set AKKO_TEST_CHROMIUM "
            "to another Chromium executable."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser page; a failing test leaves a screenshot of it."""
    context = browser.new_context(viewport=VIEWPORT)
    new_page = context.new_page()
    console_errors: list[str] = []
    new_page.on(
        "console",
        lambda message: (
            console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    new_page.console_errors = console_errors
    yield new_page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        new_page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"))
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def save_screenshot(target, name: str, *, docs: bool = False) -> Path:
    """Save a page or element screenshot as ``test-artifacts/jupyterlab/<name>.png``.

    With ``docs`` and ``AKKO_UPDATE_DOCS_IMAGES=1``, copy it to ``docs/images/`` too.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    target.screenshot(path=str(path))
    if docs and os.environ.get("AKKO_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / f"jupyterlab-{name}.png")
    return path
