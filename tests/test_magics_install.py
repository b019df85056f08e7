"""``python -m akko_jupyter_llm.magics install``: the magics load in every new kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_kernel_client import run_in_kernel

pytest.importorskip("jupyter_ai_magics")

CHECK_LOADED = (
    "print('akko_jupyter_llm' in get_ipython().extension_manager.loaded, "
    "'ai' in get_ipython().magics_manager.magics['cell'])"
)


def magics_command(action: str, ipython_dir) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "akko_jupyter_llm.magics", action,
         "--ipython-dir", str(ipython_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_install_then_uninstall(proxy, upstream, jp_serverapp, tmp_path, monkeypatch):
    ipython_dir = tmp_path / "ipython"
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))

    assert (await run_in_kernel(jp_serverapp, CHECK_LOADED)).split() == ["False", "False"]

    output = magics_command("install", ipython_dir)
    startup = ipython_dir / "profile_default" / "startup"
    assert str(startup) in output
    assert len(list(startup.glob("*.py"))) == 1
    assert (await run_in_kernel(jp_serverapp, CHECK_LOADED)).split() == ["True", "True"]

    output = magics_command("uninstall", ipython_dir)
    assert "Removed" in output
    assert list(startup.glob("*.py")) == []
    assert (await run_in_kernel(jp_serverapp, CHECK_LOADED)).split() == ["False", "False"]


def test_uninstall_without_install(tmp_path):
    output = magics_command("uninstall", tmp_path / "ipython")
    assert "Nothing to remove" in output
