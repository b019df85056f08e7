"""The Binder set-up, offline: binder/ steps in a fresh venv with the tiny model.

On mybinder.org, repo2docker installs binder/requirements.txt, runs
binder/postBuild (which installs this repository and downloads two small real
GGUF models) and starts Jupyter through binder/start. Here the same steps run
in a fresh virtual environment, with packages from .cache/wheelhouse (filled by
scripts/test) and the tiny generated model in place of the downloads.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import venv
from pathlib import Path

import pytest

from tests.servers.process import start_server

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPOSITORY_ROOT / ".cache" / "wheelhouse"

pytestmark = pytest.mark.models


def run(command, **kwargs) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def binder_environment(tmp_path_factory, tiny_model_path):
    if not any(WHEELHOUSE.glob("jupyterlab-*.whl")):
        pytest.fail(
            f"{WHEELHOUSE} has no JupyterLab wheel: run the suite with scripts/test, "
            "which downloads binder/requirements.txt there before the tests go offline"
        )
    root = tmp_path_factory.mktemp("binder")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    environment = dict(os.environ)
    environment.update(
        {
            "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}",
            "VIRTUAL_ENV": str(env_dir),
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(WHEELHOUSE),
            "HOME": str(root / "home"),
            "AKKO_BINDER_MODEL_SOURCE": str(tiny_model_path),
            "AKKO_BINDER_EMBEDDING_MODEL_SOURCE": str(tiny_model_path),
            "JUPYTER_CONFIG_DIR": str(root / "home" / ".jupyter"),
        }
    )
    for name in list(environment):
        if name.startswith(("AKKO_LLM_", "JUPYTER_PATH", "PYTHONPATH")):
            del environment[name]
    (root / "home").mkdir()
    # The steps repo2docker takes, in its order.
    run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "-r", str(REPOSITORY_ROOT / "binder" / "requirements.txt")], env=environment)
    run([str(REPOSITORY_ROOT / "binder" / "postBuild")], env=environment, cwd=REPOSITORY_ROOT)
    return env_dir, environment


def test_postbuild_fetched_models(binder_environment, tiny_model_path):
    _, environment = binder_environment
    model_dir = Path(environment["HOME"]) / ".cache" / "akko-llm"
    assert (model_dir / "model.gguf").read_bytes() == tiny_model_path.read_bytes()
    assert (model_dir / "embedding-model.gguf").is_file()


def test_binder_start_serves_models(binder_environment, tmp_path):
    env_dir, environment = binder_environment
    token = "binder-test-token"
    environment = dict(environment, AKKO_BINDER_MODEL_PORT=str(_free_port()))

    def command(port: int) -> list[str]:
        return [
            str(REPOSITORY_ROOT / "binder" / "start"),
            str(env_dir / "bin" / "jupyter"), "lab", "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
            f"--IdentityProvider.token={token}",
        ]

    server = start_server(
        "binder JupyterLab", command, "/api/status?token=" + token,
        tmp_path / "binder-lab.log", env=environment, cwd=REPOSITORY_ROOT, timeout=120,
    )
    try:
        headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
        endpoint = f"{server.url}/akko-llm/v1"
        models = _wait_for_models(endpoint, headers)
        assert {"qwen2.5:3b", "qwen2.5-coder:7b", "nomic-embed-text"} <= set(models)

        request = urllib.request.Request(
            f"{endpoint}/chat/completions", headers=headers, method="POST",
            data=json.dumps({"model": "qwen2.5:3b", "max_tokens": 8,
                             "messages": [{"role": "user", "content": "hi"}]}).encode(),
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            reply = json.load(response)
        assert reply["choices"][0]["message"]["content"]
    finally:
        server.stop()


def _free_port() -> int:
    from tests.servers.process import find_free_port

    return find_free_port()


def _wait_for_models(endpoint: str, headers: dict, timeout: float = 60.0) -> list[str]:
    """Wait until the model server behind the proxy answers; return the model ids."""
    import time

    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"{endpoint}/models", headers=headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                return [model["id"] for model in json.load(response)["data"]]
        except OSError as error:  # 502 while llama.cpp is still loading
            last_error = error
            time.sleep(0.5)
    raise AssertionError(f"the model server did not answer within {timeout} s: {last_error}")


def test_binder_files_executable():
    for name in ("postBuild", "start"):
        assert os.access(REPOSITORY_ROOT / "binder" / name, os.X_OK), name
