"""Tests of the model-serving test infrastructure, through the clients the product serves.

They check that the tiny model, llama_cpp.server, the Ollama-native test upstream and the
LiteLLM proxy behave as the product's tests rely on: printable deterministic replies,
streaming in several chunks, one embedding per input, and LiteLLM's key handling.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from tests.servers.litellm import LiteLLMGateway
from tests.servers.llama import DEFAULT_MAX_TOKENS, LlamaServer, write_tiny_model
from tests.servers.ollama_upstream import OllamaUpstream
from tests.servers import process
from tests.servers.process import ServerStartError, start_server
from tests.upstreams.ollama import EMBEDDING_DIMENSION, REPLY_PREFIX

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
CLIENT_TIMEOUT_SECONDS = 30.0
TINY_MODEL_WIDTH = 64
MAX_TOKENS = 24
CHAT_MESSAGES = [{"role": "user", "content": "Which region had the highest sales?"}]


def openai_client(base_url: str, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=base_url, api_key=api_key, timeout=CLIENT_TIMEOUT_SECONDS, max_retries=0
    )


def chat_reply(client: openai.OpenAI, model: str) -> str:
    completion = client.chat.completions.create(
        model=model, messages=CHAT_MESSAGES, temperature=0, max_tokens=MAX_TOKENS
    )
    return completion.choices[0].message.content or ""


def streamed_chat_pieces(client: openai.OpenAI, model: str) -> list[str]:
    stream = client.chat.completions.create(
        model=model, messages=CHAT_MESSAGES, temperature=0, max_tokens=MAX_TOKENS, stream=True
    )
    pieces = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    return pieces


def metadata_value(reader: gguf.GGUFReader, key: str):
    field = reader.fields[key]
    return field.contents()


# Tiny model file


def test_tiny_model_is_small_and_reproducible(tiny_model_path: Path, tmp_path: Path):
    second_copy = write_tiny_model(tmp_path / "again.gguf")

    assert tiny_model_path.stat().st_size < 1_000_000
    assert second_copy.read_bytes() == tiny_model_path.read_bytes()


def test_tiny_model_metadata(tiny_model_path: Path):
    reader = gguf.GGUFReader(tiny_model_path)
    tokens = metadata_value(reader, "tokenizer.ggml.tokens")
    token_types = metadata_value(reader, "tokenizer.ggml.token_type")
    byte_tokens = [t for t, kind in zip(tokens, token_types) if kind == gguf.TokenType.BYTE]

    assert metadata_value(reader, "general.architecture") == "llama"
    assert metadata_value(reader, "llama.block_count") == 2
    assert metadata_value(reader, "llama.embedding_length") == TINY_MODEL_WIDTH
    assert metadata_value(reader, "llama.attention.head_count") == 4
    assert metadata_value(reader, "llama.pooling_type") == int(gguf.PoolingType.MEAN)
    assert metadata_value(reader, "tokenizer.ggml.model") == "llama"
    assert "<|im_start|>" in metadata_value(reader, "tokenizer.chat_template")
    assert 256 < len(tokens) < 1000
    assert byte_tokens == [f"<0x{byte:02X}>" for byte in range(256)]


# llama_cpp.server


def test_llama_server_lists_models(llama_server: LlamaServer):
    model_ids = [model.id for model in openai_client(llama_server.base_url).models.list()]

    assert sorted(model_ids) == sorted(llama_server.model_ids)


@pytest.mark.parametrize("model", ["qwen2.5:3b", "qwen2.5-coder:7b"])
def test_llama_chat_is_printable_and_deterministic(llama_server: LlamaServer, model: str):
    client = openai_client(llama_server.base_url)

    first_reply = chat_reply(client, model)
    second_reply = chat_reply(client, model)

    assert first_reply.strip(), f"empty reply; see {llama_server.log_path}"
    assert first_reply.isprintable(), f"reply has control characters: {first_reply!r}"
    assert second_reply == first_reply


def test_llama_chat_stream_matches_plain_reply(llama_server: LlamaServer):
    client = openai_client(llama_server.base_url)

    pieces = streamed_chat_pieces(client, "qwen2.5:3b")
    second_pieces = streamed_chat_pieces(client, "qwen2.5:3b")
    plain_reply = chat_reply(client, "qwen2.5:3b")

    assert len(pieces) >= 5, f"expected several chunks, got {pieces!r}"
    assert "".join(pieces).isprintable()
    assert second_pieces == pieces
    assert "".join(pieces) == plain_reply


CONCURRENT_STREAMS = 8


def concurrent_stream_pieces(base_url: str) -> list[list[str]]:
    """Return the text pieces of CONCURRENT_STREAMS streamed chats started at once."""
    client = openai_client(base_url)
    with ThreadPoolExecutor(CONCURRENT_STREAMS) as pool:
        jobs = [
            pool.submit(streamed_chat_pieces, client, "qwen2.5:3b")
            for _ in range(CONCURRENT_STREAMS)
        ]
        return [job.result() for job in jobs]


def test_llama_concurrent_streams_complete(llama_server: LlamaServer):
    replies = concurrent_stream_pieces(llama_server.base_url)
    expected = streamed_chat_pieces(openai_client(llama_server.base_url), "qwen2.5:3b")

    empty = [index for index, pieces in enumerate(replies) if not pieces]
    assert empty == [], f"streams without text: {empty}; see {llama_server.log_path}"
    assert all(pieces == expected for pieces in replies)


def test_serve_model_script_concurrent_streams(tmp_path: Path):
    script = REPOSITORY_ROOT / "scripts" / "serve_model.py"
    log_path = tmp_path / "serve-model.log"
    server = start_server(
        "serve_model.py",
        lambda port: [
            sys.executable, str(script), "--port", str(port), "--cache-dir", str(tmp_path)
        ],
        "/v1/models",
        log_path,
        env={"CONFIG_FILE": None},
    )
    try:
        replies = concurrent_stream_pieces(f"{server.url}/v1")
    finally:
        server.stop()

    empty = [index for index, pieces in enumerate(replies) if not pieces]
    assert empty == [], f"streams without text: {empty}; see {log_path}"
    assert all(pieces == replies[0] for pieces in replies)


def test_llama_chat_reply_depends_on_prompt(llama_server: LlamaServer):
    client = openai_client(llama_server.base_url)
    other_messages = [{"role": "user", "content": "hello"}]

    reply = chat_reply(client, "qwen2.5:3b")
    other = client.chat.completions.create(
        model="qwen2.5:3b", messages=other_messages, temperature=0, max_tokens=MAX_TOKENS
    )

    assert other.choices[0].message.content != reply


def test_llama_chat_limits(llama_server: LlamaServer):
    client = openai_client(llama_server.base_url)

    unlimited = client.chat.completions.create(model="qwen2.5:3b", messages=CHAT_MESSAGES)
    new_field = client.chat.completions.create(
        model="qwen2.5:3b", messages=CHAT_MESSAGES, max_completion_tokens=5
    )

    assert unlimited.usage.completion_tokens == DEFAULT_MAX_TOKENS
    assert unlimited.choices[0].finish_reason == "length"
    assert new_field.usage.completion_tokens == 5


def test_llama_completion_stops_at_max_tokens(llama_server: LlamaServer):
    completion = openai_client(llama_server.base_url).completions.create(
        model="qwen2.5:3b", prompt="SELECT region, sum(sales) FROM", temperature=0, max_tokens=8
    )

    assert completion.choices[0].text.strip()
    assert completion.choices[0].text.isprintable()
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 8


def test_llama_embeddings_one_vector_per_input(llama_server: LlamaServer):
    client = openai_client(llama_server.base_url)
    inputs = ["monthly sales by region", "a much longer text about the customer table", "x"]

    response = client.embeddings.create(model="nomic-embed-text", input=inputs)
    repeated = client.embeddings.create(model="nomic-embed-text", input=inputs[0])
    vectors = [item.embedding for item in response.data]

    assert len(vectors) == len(inputs)
    assert [len(vector) for vector in vectors] == [TINY_MODEL_WIDTH] * len(inputs)
    assert vectors[0] != vectors[1]
    assert repeated.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)


def test_llama_langchain_chat_and_stream(llama_server: LlamaServer):
    chat = ChatOpenAI(
        model="qwen2.5-coder:7b",
        base_url=llama_server.base_url,
        api_key="unused",
        temperature=0,
        max_tokens=MAX_TOKENS,
        timeout=CLIENT_TIMEOUT_SECONDS,
        max_retries=0,
    )

    message = chat.invoke("Write a query for the sales table")
    chunks = [chunk.content for chunk in chat.stream("Write a query for the sales table")]

    assert isinstance(message.content, str)
    assert message.content.strip()
    assert message.content.isprintable()
    assert message.usage_metadata["output_tokens"] == MAX_TOKENS
    assert len([chunk for chunk in chunks if chunk]) >= 5
    assert "".join(chunks) == message.content


def test_llama_langchain_embeddings(llama_server: LlamaServer):
    embeddings = OpenAIEmbeddings(
        model="nomic-embed-text",
        base_url=llama_server.base_url,
        api_key="unused",
        check_embedding_ctx_length=False,
        timeout=CLIENT_TIMEOUT_SECONDS,
        max_retries=0,
    )

    documents = embeddings.embed_documents(["first document", "second document"])
    query = embeddings.embed_query("first document")

    assert len(documents) == 2
    assert [len(vector) for vector in documents] == [TINY_MODEL_WIDTH, TINY_MODEL_WIDTH]
    assert query == pytest.approx(documents[0], abs=1e-5)


# Ollama-native test upstream


def test_ollama_upstream_tags_and_show(ollama_upstream: OllamaUpstream):
    with httpx.Client(base_url=ollama_upstream.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        tags = http.get("/api/tags")
        show = http.post("/api/show", json={"model": "qwen2.5-coder:7b"})
        missing = http.post("/api/show", json={"model": "llama3:70b"})

    assert tags.status_code == 200
    assert {model["name"] for model in tags.json()["models"]} == {
        "qwen2.5:3b",
        "qwen2.5-coder:7b",
        "nomic-embed-text",
    }
    assert show.status_code == 200
    assert show.json()["details"]["family"] == "qwen2"
    assert missing.status_code == 404
    assert "not found" in missing.json()["error"]


def test_ollama_upstream_chat_streams_ndjson(ollama_upstream: OllamaUpstream):
    body = {"model": "qwen2.5:3b", "messages": [{"role": "user", "content": "one two three"}]}

    with httpx.Client(base_url=ollama_upstream.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        response = http.post("/api/chat", json=body)
    lines = [json.loads(line) for line in response.text.splitlines()]

    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert len(lines) == 5
    assert all(line["done"] is False for line in lines[:-1])
    assert "".join(line["message"]["content"] for line in lines) == REPLY_PREFIX + "one two three"
    assert lines[-1]["done"] is True
    assert lines[-1]["done_reason"] == "stop"
    assert lines[-1]["eval_count"] > 0


def test_ollama_upstream_chat_without_stream(ollama_upstream: OllamaUpstream):
    body = {
        "model": "qwen2.5:3b",
        "stream": False,
        "messages": [{"role": "user", "content": "hello"}],
    }

    with httpx.Client(base_url=ollama_upstream.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        response = http.post("/api/chat", json=body)

    assert response.status_code == 200
    assert response.json()["message"] == {"role": "assistant", "content": REPLY_PREFIX + "hello"}
    assert response.json()["done"] is True


def test_ollama_upstream_embeddings(ollama_upstream: OllamaUpstream):
    with httpx.Client(base_url=ollama_upstream.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        embed = http.post("/api/embed", json={"model": "nomic-embed-text", "input": ["a", "b"]})
        old = http.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": "a"})

    vectors = embed.json()["embeddings"]
    assert len(vectors) == 2
    assert [len(vector) for vector in vectors] == [EMBEDDING_DIMENSION] * 2
    assert vectors[0] != vectors[1]
    assert old.json()["embedding"] == vectors[0]


def test_ollama_upstream_records_requests(ollama_upstream: OllamaUpstream):
    ollama_upstream.clear_requests()
    body = {"model": "qwen2.5:3b", "prompt": "hi", "stream": False}

    with httpx.Client(base_url=ollama_upstream.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        http.post("/api/generate", json=body, headers={"X-Test-Header": "present"})
    records = ollama_upstream.recorded_requests()
    ollama_upstream.clear_requests()

    assert len(records) == 1
    assert records[0]["method"] == "POST"
    assert records[0]["path"] == "/api/generate"
    assert records[0]["headers"]["X-Test-Header"] == "present"
    assert records[0]["body"] == body
    assert ollama_upstream.recorded_requests() == []


# LiteLLM proxy


def test_litellm_lists_configured_models(litellm_gateway: LiteLLMGateway):
    client = openai_client(litellm_gateway.base_url, litellm_gateway.master_key)

    model_ids = [model.id for model in client.models.list()]

    assert sorted(model_ids) == sorted(litellm_gateway.model_ids)


def test_litellm_chat_matches_llama_server(
    litellm_gateway: LiteLLMGateway, llama_server: LlamaServer
):
    gateway = openai_client(litellm_gateway.base_url, litellm_gateway.master_key)
    direct = openai_client(llama_server.base_url)

    assert chat_reply(gateway, "qwen2.5-coder:7b") == chat_reply(direct, "qwen2.5-coder:7b")


def test_litellm_chat_stream_to_llama(litellm_gateway: LiteLLMGateway, llama_server: LlamaServer):
    gateway = openai_client(litellm_gateway.base_url, litellm_gateway.master_key)

    pieces = streamed_chat_pieces(gateway, "qwen2.5:3b")

    assert len(pieces) >= 5, f"expected several chunks, got {pieces!r}"
    assert "".join(pieces) == chat_reply(openai_client(llama_server.base_url), "qwen2.5:3b")


def test_litellm_embeddings_to_llama(litellm_gateway: LiteLLMGateway):
    client = openai_client(litellm_gateway.base_url, litellm_gateway.master_key)

    response = client.embeddings.create(model="nomic-embed-text", input=["one", "two"])

    assert [len(item.embedding) for item in response.data] == [TINY_MODEL_WIDTH] * 2


def test_litellm_langchain_chat(litellm_gateway: LiteLLMGateway):
    chat = ChatOpenAI(
        model="qwen2.5:3b",
        base_url=litellm_gateway.base_url,
        api_key=litellm_gateway.master_key,
        temperature=0,
        max_tokens=MAX_TOKENS,
        timeout=CLIENT_TIMEOUT_SECONDS,
        max_retries=0,
    )

    message = chat.invoke("hello")

    assert isinstance(message.content, str)
    assert message.content.strip()
    assert message.content.isprintable()
    assert message.usage_metadata["output_tokens"] == MAX_TOKENS


def test_litellm_chat_to_ollama_upstream(
    litellm_gateway: LiteLLMGateway, ollama_upstream: OllamaUpstream
):
    client = openai_client(litellm_gateway.base_url, litellm_gateway.master_key)
    ollama_upstream.clear_requests()

    completion = client.chat.completions.create(
        model="ollama-test", messages=[{"role": "user", "content": "ping from the gateway"}]
    )
    chat_records = [r for r in ollama_upstream.recorded_requests() if r["path"] == "/api/chat"]

    assert completion.choices[0].message.content == REPLY_PREFIX + "ping from the gateway"
    assert len(chat_records) == 1
    assert chat_records[0]["body"]["model"] == "qwen2.5:3b"
    assert chat_records[0]["body"]["stream"] is False
    assert chat_records[0]["body"]["messages"][-1]["content"] == "ping from the gateway"


def test_litellm_stream_to_ollama_upstream(
    litellm_gateway: LiteLLMGateway, ollama_upstream: OllamaUpstream
):
    client = openai_client(litellm_gateway.base_url, litellm_gateway.master_key)
    ollama_upstream.clear_requests()

    stream = client.chat.completions.create(
        model="ollama-test",
        messages=[{"role": "user", "content": "stream these four words"}],
        stream=True,
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    chat_records = [r for r in ollama_upstream.recorded_requests() if r["path"] == "/api/chat"]

    assert pieces == ["Echo:", " stream", " these", " four", " words"]
    assert len(chat_records) == 1
    assert chat_records[0]["body"]["stream"] is True


def test_litellm_rejects_wrong_key(litellm_gateway: LiteLLMGateway):
    client = openai_client(litellm_gateway.base_url, "sk-wrong-key")

    # Without a database LiteLLM cannot look the key up, so it responds with 400, not 401.
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="qwen2.5:3b", messages=CHAT_MESSAGES, max_tokens=4)

    assert raised.value.status_code == 400
    assert raised.value.body["type"] == "no_db_connection"


def test_litellm_rejects_missing_key(litellm_gateway: LiteLLMGateway):
    body = {"model": "qwen2.5:3b", "messages": CHAT_MESSAGES, "max_tokens": 4}

    with httpx.Client(timeout=CLIENT_TIMEOUT_SECONDS) as http:
        response = http.post(f"{litellm_gateway.base_url}/chat/completions", json=body)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "auth_error"


def test_litellm_rejects_unknown_model(litellm_gateway: LiteLLMGateway):
    client = openai_client(litellm_gateway.base_url, litellm_gateway.master_key)

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="llama3:70b", messages=CHAT_MESSAGES, max_tokens=4)

    assert "Invalid model name" in raised.value.message


# Process helper


def test_start_server_reports_early_exit(tmp_path: Path):
    log_path = tmp_path / "failing.log"
    command = [sys.executable, "-c", "print('cannot open the model file'); raise SystemExit(3)"]

    with pytest.raises(ServerStartError) as raised:
        start_server("failing server", lambda port: command, "/", log_path, timeout=10)

    assert "exited with code 3" in str(raised.value)
    assert "cannot open the model file" in str(raised.value)


def test_server_stop_ends_process(tmp_path: Path):
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]

    server = start_server("http.server", command, "/", tmp_path / "http.log", cwd=tmp_path)
    server.stop(timeout=5)

    assert server.process.returncode is not None
    assert not server.is_running()


def test_start_server_retries_taken_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port, process.find_free_port()])
        monkeypatch.setattr(process, "find_free_port", lambda: next(ports))

        server = start_server("http.server", command, "/", tmp_path / "http.log", cwd=tmp_path)
        server.stop(timeout=5)

    assert server.port != taken_port
    assert server.process.returncode is not None


def http_server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


# A stand-in for the pytest process: it starts a server, prints the server's PID and waits
# to be killed.
PARENT_PROGRAM = """
import sys
from pathlib import Path

from tests.servers.process import start_server


def command(port):
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


log_path, directory = Path(sys.argv[1]), Path(sys.argv[2])
server = start_server("http.server", command, "/", log_path, cwd=directory)
print(server.pid, flush=True)
sys.stdin.read()
"""


def process_start_time(pid: int) -> str | None:
    """Return the start time of a running process from /proc, or None when it has exited.

    A zombie, which has exited but is not yet reaped by its new parent, counts as exited.
    The start time distinguishes the process from a later one that reuses its PID.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The fields after the command name, which is in parentheses: state first, start
    # time 20th.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_time = fields[0], fields[19]
    return None if state in ("Z", "X") else start_time


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """Return the next line of the process's stdout, or '' after ``timeout`` seconds."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline() if ready else ""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG exists only on Linux"
)
def test_server_stops_when_parent_killed(tmp_path: Path):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_PROGRAM, str(tmp_path / "http.log"), str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY_ROOT,
    )
    server_pid = None
    started = None
    try:
        line = read_line(parent, timeout=30)
        assert line.strip().isdigit(), f"the parent printed {line!r}, not the server's PID"
        server_pid = int(line)
        started = process_start_time(server_pid)
        server_group = os.getpgid(server_pid)

        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while process_start_time(server_pid) == started and time.monotonic() < deadline:
            time.sleep(0.05)
        still_running = process_start_time(server_pid) == started
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        # A server that outlived its parent is stopped here, with its process group.
        if server_pid is not None and process_start_time(server_pid) == started:
            os.killpg(server_pid, signal.SIGKILL)

    assert started is not None
    assert server_group == server_pid
    assert not still_running, f"server pid {server_pid} runs 5 s after its parent died"


def test_server_outlives_starting_thread(tmp_path: Path):
    servers = []

    def start() -> None:
        log_path = tmp_path / "http.log"
        server = start_server("http.server", http_server_command, "/", log_path, cwd=tmp_path)
        servers.append(server)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join(timeout=60)
    assert len(servers) == 1, "start_server failed in the thread"
    server = servers[0]
    try:
        # A parent-death signal tied to the finished thread would arrive by now.
        time.sleep(0.5)
        running = server.is_running()
    finally:
        server.stop(timeout=5)

    assert running
