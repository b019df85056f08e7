"""What ships: the built wheel, installed into a clean virtual environment.

The wheel's dependencies are installed offline from .cache/wheelhouse, which
scripts/test fills before the suite runs without network access.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from akko_jupyter_llm import __version__

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPOSITORY_ROOT / ".cache" / "wheelhouse"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def run(command: list[str], **kwargs) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command} failed:\n{output}"
    return ANSI_ESCAPE.sub("", output)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out_dir)],
        cwd=REPOSITORY_ROOT,
    )
    (built,) = out_dir.glob("akko_jupyter_llm-*.whl")
    return built


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory, wheel) -> Path:
    if not any(WHEELHOUSE.glob("jupyter_server-*.whl")):
        pytest.fail(
            f"{WHEELHOUSE} has no wheels: run the suite with scripts/test, which "
            "downloads the wheel's dependencies there before the tests go offline"
        )
    root = tmp_path_factory.mktemp("clean-venv")
    venv.create(root, with_pip=True)
    run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
         "--find-links", str(WHEELHOUSE), str(wheel)],
    )
    return root


def test_wheel_contents(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "akko_jupyter_llm/app.py" in names
    assert any(
        name.endswith("etc/jupyter/jupyter_server_config.d/akko_jupyter_llm.json")
        for name in names
    )
    assert not any("tests/" in name for name in names)
    labextension = (
        f"akko_jupyter_llm-{__version__}.data/data/"
        "share/jupyter/labextensions/akko-jupyter-llm/"
    )
    for built in ("package.json", "install.json", "static/style.js",
                  "schemas/akko-jupyter-llm/plugin.json"):
        assert labextension + built in names, built
    assert not any("node_modules" in name for name in names)


@pytest.fixture(scope="module")
def lab_venv(tmp_path_factory, wheel) -> Path:
    """Return a clean venv with the wheel and JupyterLab (not a dependency)."""
    if not any(WHEELHOUSE.glob("jupyterlab-*.whl")):
        pytest.fail(
            f"{WHEELHOUSE} has no JupyterLab wheel: run the suite with scripts/test, "
            "which downloads binder/requirements.txt there before the tests go offline"
        )
    root = tmp_path_factory.mktemp("lab-venv")
    venv.create(root, with_pip=True)
    run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
         "--find-links", str(WHEELHOUSE), str(wheel), "jupyterlab"],
    )
    return root


def test_labextension_enabled_after_install(lab_venv, tmp_path):
    environment = dict(os.environ)
    # Only the clean venv's extensions, not the developer's.
    environment["JUPYTER_CONFIG_DIR"] = str(tmp_path / "user-config")
    environment["JUPYTER_DATA_DIR"] = str(tmp_path / "user-data")
    environment.pop("JUPYTER_PATH", None)
    output = run([str(lab_venv / "bin" / "jupyter"), "labextension", "list"],
                 env=environment)
    assert (
        f"akko-jupyter-llm v{__version__} enabled OK (python, akko-jupyter-llm)"
        in output
    ), output


def test_sdist_contains_labextension_sources(tmp_path):
    import tarfile

    build = [sys.executable, "-m", "build", "--sdist", "--no-isolation"]
    run([*build, "--outdir", str(tmp_path)], cwd=REPOSITORY_ROOT)
    (sdist,) = tmp_path.glob("akko_jupyter_llm-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for source in ("labextension/package.json", "labextension/package-lock.json",
                   "labextension/tsconfig.json", "labextension/src/index.ts",
                   "labextension/style/base.css", "labextension/schema/plugin.json"):
        assert source in names, source
    assert "akko_jupyter_llm/labextension/static/style.js" in names
    assert not any("node_modules" in name for name in names)


def test_extension_enabled_after_install(clean_venv, tmp_path):
    environment = dict(os.environ)
    # Only the clean venv's configuration, not the developer's.
    environment["JUPYTER_CONFIG_DIR"] = str(tmp_path / "user-config")
    environment.pop("JUPYTER_PATH", None)
    output = run([str(clean_venv / "bin" / "jupyter"), "server", "extension", "list"],
                 env=environment)
    assert "akko_jupyter_llm enabled" in output
    assert f"akko_jupyter_llm {__version__} OK" in output


def test_installed_package_imports_without_server(clean_venv):
    """Kernels import the package; that must not start or need a server."""
    output = run([
        str(clean_venv / "bin" / "python"), "-c",
        "import sys, akko_jupyter_llm; print(akko_jupyter_llm.__version__); "
        "print('jupyter_server' in sys.modules)",
    ])
    assert output.split() == [__version__, "False"]


def test_sdist_and_wheel_pass_twine_check(tmp_path, wheel):
    run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=REPOSITORY_ROOT,
    )
    (sdist,) = tmp_path.glob("akko_jupyter_llm-*.tar.gz")
    output = run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    assert output.count("PASSED") == 2


def test_version_single_sourced(wheel):
    import json

    package_json = json.loads((REPOSITORY_ROOT / "labextension" / "package.json").read_text())
    assert package_json["version"] == __version__
    assert wheel.name.startswith(f"akko_jupyter_llm-{__version__}-")
    assert f"## {__version__}" in (REPOSITORY_ROOT / "CHANGELOG.md").read_text()
