"""jupyter-ai 2.x with the akko providers against real model servers.

The Jupyter server runs jupyter-ai 2.31 and this extension. Its upstream is the
real LiteLLM gateway in front of the llama.cpp server on the tiny generated
model, or the llama.cpp server directly. Kernels are real IPython kernels
started from this process, so they inherit the endpoint variables that the
server sets.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# jupyter-ai 3.x has no providers; its tests are in test_jupyter_ai3.py.
pytest.importorskip("jupyter_ai_magics", reason="needs jupyter-ai 2.x")

from tests.jupyter_ai_fixtures import JUPYTER_AI_WARNING_FILTERS
from tests.test_kernel_client import run_in_kernel

pytestmark = [pytest.mark.models] + [
    pytest.mark.filterwarnings(rule) for rule in JUPYTER_AI_WARNING_FILTERS
]

EXAMPLE_NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "text_to_sql.ipynb"


@pytest.fixture(params=["litellm", "llama"])
def real_upstream(request):
    """The upstream under test: the LiteLLM gateway, or llama.cpp without a gateway."""
    if request.param == "litellm":
        gateway = request.getfixturevalue("litellm_gateway")
        return {"url": gateway.base_url, "key": gateway.master_key, "name": "litellm"}
    server = request.getfixturevalue("llama_server")
    return {"url": server.base_url, "key": "", "name": "llama"}


@pytest.fixture
def akko_settings(real_upstream) -> dict:
    return {"upstream_url": real_upstream["url"], "api_key": real_upstream["key"]}


@pytest.fixture
def jp_server_config(jupyter_ai_server_config):
    return jupyter_ai_server_config


@pytest.mark.ai_env(JUPYTER_AI_DEFAULT_PROVIDER="akko", JUPYTER_AI_DEFAULT_MODEL="qwen2.5:3b")
async def test_fresh_user_config_and_providers(jupyter_ai):
    await jupyter_ai.ready()
    config = await jupyter_ai.config()
    assert config["model_provider_id"] == "akko:qwen2.5:3b"
    assert config["embeddings_provider_id"] == "akko:nomic-embed-text"

    provider = await jupyter_ai.akko_provider()
    assert {"qwen2.5:3b", "qwen2.5-coder:7b"} <= set(provider["models"])
    assert "nomic-embed-text" not in provider["models"]
    embeddings = await jupyter_ai.akko_provider("embeddings")
    assert embeddings["models"] == ["nomic-embed-text"]


@pytest.mark.ai_env(JUPYTER_AI_DEFAULT_MODEL="akko:qwen2.5:3b")
async def test_chat_reply_from_model_server(jupyter_ai):
    await jupyter_ai.ready()
    reply = await jupyter_ai.chat("Show me the top 10 customers by total balance")
    assert reply.strip()
    assert "**Error:**" not in reply
    assert "Traceback" not in reply


@pytest.mark.ai_saved(model_provider_id="akko:no-such-model:1b")
async def test_chat_unknown_model_is_readable(jupyter_ai, real_upstream):
    if real_upstream["name"] == "llama":
        pytest.skip("llama_cpp.server answers any model id with its loaded model")
    await jupyter_ai.ready()
    reply = await jupyter_ai.chat("hello")
    assert "Traceback" not in reply
    assert "does not serve the model 'no-such-model:1b'" in reply
    assert "qwen2.5:3b" in reply


async def test_embeddings_provider_vectors(jupyter_ai):
    from akko_jupyter_llm.jupyter_ai_providers import AkkoEmbeddingsProvider

    await jupyter_ai.ready()
    provider = AkkoEmbeddingsProvider(model_id="nomic-embed-text")
    vectors = await provider.aembed_documents(["customers", "balances"])
    assert len(vectors) == 2
    assert len(vectors[0]) == len(vectors[1]) > 0
    assert vectors[0] != vectors[1]
    query = await provider.aembed_query("customers")
    assert len(query) == len(vectors[0])


KERNEL_MAGICS = """
import json
ip = get_ipython()
ip.run_line_magic("load_ext", "akko_jupyter_llm")
magics = ip.magics_manager.registry["AiMagics"]
listing = json.dumps(ip.run_line_magic("ai", "list akko")._repr_mimebundle_())
without_id = ip.run_cell_magic("ai", "", "Which region had the highest sales?")
with_id = ip.run_cell_magic("ai", "akko:qwen2.5-coder:7b -f text", "Write a Trino query")
alias = ip.run_cell_magic("ai", "coder -f text", "Write a Trino query")
print(json.dumps({
    "default": magics.default_language_model,
    "listing": listing,
    "without_id": without_id._repr_markdown_()[0] if hasattr(without_id, "_repr_markdown_") else str(without_id),
    "without_id_model": (getattr(without_id, "metadata", None) or {}),
    "with_id": str(with_id),
    "with_id_model": (getattr(with_id, "metadata", None) or {}),
    "alias": str(alias),
}, default=str))
"""


@pytest.mark.ai_env(JUPYTER_AI_DEFAULT_MODEL="qwen2.5:3b")
async def test_kernel_ai_magic(jupyter_ai, jp_serverapp):
    await jupyter_ai.ready()
    output = await run_in_kernel(jp_serverapp, KERNEL_MAGICS)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["default"] == "akko:qwen2.5:3b"
    assert "akko:qwen2.5-coder:7b" in result["listing"]
    assert "akko:nomic-embed-text" not in result["listing"]
    assert result["without_id"].strip()
    assert result["without_id_model"]["jupyter_ai"]["model_id"] == "qwen2.5:3b"
    assert result["with_id"].strip()
    assert result["with_id_model"]["jupyter_ai"]["model_id"] == "qwen2.5-coder:7b"
    assert result["alias"].strip()


def model_server_chat_requests(llama_server) -> int:
    """Return how many chat requests the llama.cpp server has logged so far."""
    log = llama_server.log_path.read_text(encoding="utf-8", errors="replace")
    return log.count("POST /v1/chat/completions")


async def test_example_notebook_runs(jupyter_ai, real_upstream, llama_server, tmp_path):
    await jupyter_ai.ready()
    requests_before = model_server_chat_requests(llama_server)
    notebook = nbformat.read(EXAMPLE_NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    await client.async_execute()

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code_cells:
        errors = [output for output in cell.outputs if output.output_type == "error"]
        assert errors == [], (cell.source, errors)
    listing = json.dumps(code_cells[1].outputs)
    assert "akko:qwen2.5-coder:7b" in listing
    sql_output = "".join(
        output.get("text", "") for output in code_cells[-1].outputs if output.output_type == "stream"
    )
    assert sql_output.strip()
    # The %%ai cells produced output from the model, not an error message.
    for cell in code_cells[2:4]:
        assert cell.outputs, cell.source
        assert "failed" not in json.dumps(cell.outputs)
    # Two %%ai cells and the openai_client() cell reached the model server.
    assert model_server_chat_requests(llama_server) - requests_before == 3
