"""The documentation site builds without warnings and documents every setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from akko_jupyter_llm.app import AkkoLLM

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reference = (tmp_path / "site" / "configuration" / "index.html").read_text()
    for name, trait in AkkoLLM.class_traits(config=True).items():
        if name in AkkoLLM.__dict__:
            assert f"<code>{name}</code>" in reference, name
    assert "AKKO_LLM_UPSTREAM_URL" in reference
    assert "&lt;key&gt;" in reference
