"""Every example notebook runs, cell by cell, in a real kernel of a real server.

The server's extension forwards to the LiteLLM gateway in front of the llama.cpp
server on the tiny model, so the answers are nonsense but every request takes
the real path.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.ipynb"))

pytestmark = pytest.mark.models


@pytest.fixture
def akko_settings(litellm_gateway) -> dict:
    return {"upstream_url": litellm_gateway.base_url, "api_key": litellm_gateway.master_key}


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
async def test_notebook_runs(path, proxy, jp_serverapp, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    await client.async_execute()

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    for index, cell in enumerate(code_cells):
        assert cell.execution_count is not None, f"cell {index} did not run"
        errors = [output for output in cell.outputs if output.output_type == "error"]
        assert errors == [], f"cell {index} failed: {errors}"


def test_examples_present():
    names = {path.stem for path in EXAMPLES}
    assert {"chat_and_streaming", "retrieval_with_embeddings"} <= names
