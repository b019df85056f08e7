"""The ``akko-llm`` command, run as a subprocess against the test upstream."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GATEWAY_KEY
from tests.upstreams.https import start_https_upstream
from tests.diagnostics_fixtures import ScriptedUpstream, closed_port, run_cli


@pytest.fixture
def upstream(jp_asyncio_loop):
    server = ScriptedUpstream(expected_key=GATEWAY_KEY)
    jp_asyncio_loop.run_until_complete(server.start())
    yield server
    jp_asyncio_loop.run_until_complete(server.stop())


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "api-key"
    path.write_text(GATEWAY_KEY + "\n")
    return path


def cli_environment(**variables: str) -> dict[str, str]:
    """Return this process' environment without the product's variables, plus others."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AKKO_LLM_", "JUPYTER_AI_"))
    }
    environment.update(variables)
    return environment


async def doctor_json(*args: str, env: dict[str, str]) -> tuple[int, dict, str]:
    code, stdout, stderr = await run_cli("doctor", "--json", *args, env=env)
    return code, json.loads(stdout), stderr


def checks_of(document: dict) -> dict[str, dict]:
    return {check["name"]: check for check in document["checks"]}


async def test_doctor_healthy_text(upstream, key_file):
    code, stdout, stderr = await run_cli(
        "doctor",
        "--upstream-url",
        upstream.url,
        "--api-key-file",
        str(key_file),
        env=cli_environment(),
    )

    assert code == 0, stdout + stderr
    assert "Result: all checks passed." in stdout
    assert f"Gateway: {upstream.url}" in stdout
    assert f"the file {key_file} (--api-key-file)" in stdout
    assert "[   ok] Default chat model served" in stdout
    assert GATEWAY_KEY not in stdout + stderr


async def test_doctor_json_from_environment(upstream):
    environment = cli_environment(
        AKKO_LLM_UPSTREAM_URL=upstream.url, AKKO_LLM_API_KEY=GATEWAY_KEY
    )

    code, document, _ = await doctor_json(env=environment)

    assert code == 0
    assert document["status"] == "ok"
    assert document["upstream_url"] == upstream.url
    assert document["key_source"] == "$AKKO_LLM_API_KEY"
    assert {check["status"] for check in document["checks"]} == {"ok"}
    assert GATEWAY_KEY not in json.dumps(document)


async def test_doctor_refused_exits_1(key_file):
    port = closed_port()
    url = f"http://127.0.0.1:{port}/v1"

    code, document, _ = await doctor_json(
        "--upstream-url", url, "--api-key-file", str(key_file), env=cli_environment()
    )
    reachable = checks_of(document)["gateway_reachable"]

    assert code == 1
    assert document["status"] == "error"
    assert reachable["status"] == "error"
    assert url in reachable["message"]
    assert "The URL comes from --upstream-url." in reachable["hint"]


async def test_doctor_wrong_key_exits_1(upstream, tmp_path):
    wrong = tmp_path / "wrong-key"
    wrong.write_text("sk-not-the-gateway-key\n")

    code, document, stderr = await doctor_json(
        "--upstream-url", upstream.url, "--api-key-file", str(wrong),
        env=cli_environment(),
    )
    key = checks_of(document)["key_accepted"]

    assert code == 1
    assert key["status"] == "error"
    assert f"the file {wrong} (--api-key-file)" in key["hint"]
    assert "sk-not-the-gateway-key" not in json.dumps(document) + stderr


MISSING_KEY_FILE = "/nonexistent/akko-llm/api-key"


@pytest.mark.parametrize(
    ("flags", "variables", "named_file"),
    [
        (
            ["--api-key-file", MISSING_KEY_FILE],
            {},
            f"{MISSING_KEY_FILE} (--api-key-file)",
        ),
        (
            [],
            {"AKKO_LLM_API_KEY_FILE": MISSING_KEY_FILE},
            f"{MISSING_KEY_FILE} ($AKKO_LLM_API_KEY_FILE)",
        ),
    ],
    ids=["flag", "variable"],
)
async def test_key_file_error_names_source(upstream, flags, variables, named_file):
    code, document, stderr = await doctor_json(
        "--upstream-url", upstream.url, *flags, env=cli_environment(**variables)
    )
    key = checks_of(document)["key_accepted"]

    assert code == 1
    assert key["status"] == "error"
    assert f"Cannot read the gateway key file {named_file}: " in key["message"]
    assert "c.AkkoLLM" not in json.dumps(document)
    assert "c.AkkoLLM" not in stderr


async def test_doctor_no_key_configured(upstream):
    code, document, _ = await doctor_json(
        "--upstream-url", upstream.url, env=cli_environment()
    )
    key = checks_of(document)["key_accepted"]

    assert code == 1
    assert "none is configured" in key["message"]
    assert "AKKO_LLM_API_KEY_FILE" in key["hint"]


async def test_doctor_missing_default_exits_1(upstream, key_file):
    upstream.models = [{"id": "qwen2.5-coder:7b"}, {"id": "nomic-embed-text"}]

    code, document, _ = await doctor_json(
        "--upstream-url", upstream.url, "--api-key-file", str(key_file),
        env=cli_environment(),
    )

    assert code == 1
    assert checks_of(document)["default_chat_model"]["status"] == "error"


async def test_doctor_warning_exits_0(upstream, key_file):
    environment = cli_environment(AKKO_LLM_COMPLETIONS_MODEL="starcoder2:3b")

    code, document, _ = await doctor_json(
        "--upstream-url", upstream.url, "--api-key-file", str(key_file), env=environment
    )
    completions = checks_of(document)["default_completions_model"]

    assert code == 0
    assert document["status"] == "warn"
    assert completions["status"] == "warn"
    assert "'starcoder2:3b'" in completions["message"]
    assert "AKKO_LLM_COMPLETIONS_MODEL" in completions["message"]


async def test_doctor_timeout(upstream, key_file):
    upstream.models_delay = 3

    code, document, _ = await doctor_json(
        "--upstream-url", upstream.url, "--api-key-file", str(key_file),
        "--timeout", "0.5", env=cli_environment(),
    )
    reachable = checks_of(document)["gateway_reachable"]

    assert code == 1
    assert reachable["status"] == "error"
    assert "within 0.5 s" in reachable["message"]
    assert reachable["ms"] < 2500


async def test_doctor_live(upstream, key_file):
    upstream.control = {"chunks": 5, "gap": 0.1}

    code, document, _ = await doctor_json(
        "--upstream-url", upstream.url, "--api-key-file", str(key_file), "--live",
        env=cli_environment(),
    )
    live = checks_of(document)["live_test"]

    assert code == 0
    assert live["status"] == "ok"
    assert live["details"]["delivery"] == "spread"
    assert live["details"]["chunks"] == 5


async def test_doctor_live_text_report(upstream, key_file):
    upstream.control = {"delay": 0.6, "chunks": 8, "gap": 0}

    code, stdout, _ = await run_cli(
        "doctor", "--upstream-url", upstream.url, "--api-key-file", str(key_file),
        "--live", env=cli_environment(),
    )

    text = " ".join(stdout.split())  # The report wraps lines at 88 columns.

    assert code == 0
    assert "[ WARN] Live test" in stdout
    assert "chunks all at once" in text
    assert "What to do:" in stdout
    assert "with 1 warning(s)" in stdout


async def test_doctor_invalid_url_exits_1():
    code, document, _ = await doctor_json(
        "--upstream-url", "ftp://127.0.0.1/v1", env=cli_environment()
    )
    settings = checks_of(document)["settings_valid"]

    assert code == 1
    assert settings["status"] == "error"
    assert "must start with http:// or https://" in settings["message"]
    assert checks_of(document)["gateway_reachable"]["status"] == "skipped"


@pytest.mark.parametrize(
    ("flags", "variables", "source"),
    [
        (["--upstream-url", "ftp://127.0.0.1/v1"], {}, "--upstream-url"),
        ([], {"AKKO_LLM_UPSTREAM_URL": "ftp://127.0.0.1/v1"}, "$AKKO_LLM_UPSTREAM_URL"),
    ],
    ids=["flag", "variable"],
)
async def test_doctor_invalid_url_names_source(flags, variables, source):
    code, document, _ = await doctor_json(*flags, env=cli_environment(**variables))
    settings = checks_of(document)["settings_valid"]

    assert code == 1
    assert settings["message"].startswith(f"{source} must start with http://")
    assert "c.AkkoLLM" not in json.dumps(document)


async def test_url_password_names_key_variables():
    code, document, _ = await doctor_json(
        "--upstream-url", "http://user:secret@127.0.0.1/v1", env=cli_environment()
    )
    settings = checks_of(document)["settings_valid"]

    assert code == 1
    assert settings["message"].startswith("--upstream-url must not contain a user name")
    assert (
        "put the gateway key in $AKKO_LLM_API_KEY, or in a file named by "
        "--api-key-file or $AKKO_LLM_API_KEY_FILE." in settings["message"]
    )
    assert "c.AkkoLLM" not in json.dumps(document)
    assert "secret" not in json.dumps(document)


async def test_doctor_invalid_timeout_exits_2():
    code, _, stderr = await run_cli("doctor", "--timeout", "0", env=cli_environment())

    assert code == 2
    assert "must be more than 0 seconds" in stderr


async def test_models_lists_kinds(upstream, key_file):
    code, stdout, _ = await run_cli(
        "models", "--upstream-url", upstream.url, "--api-key-file", str(key_file),
        env=cli_environment(),
    )
    rows = [line.split() for line in stdout.splitlines()]

    assert code == 0
    assert rows == [
        ["ID", "KIND"],
        ["qwen2.5:3b", "chat"],
        ["qwen2.5-coder:7b", "chat"],
        ["nomic-embed-text", "embedding"],
    ]


async def test_models_json(upstream, key_file):
    code, stdout, _ = await run_cli(
        "models", "--json", "--upstream-url", upstream.url,
        "--api-key-file", str(key_file), env=cli_environment(),
    )
    models = json.loads(stdout)
    embedding = {"id": "nomic-embed-text", "kind": "embedding", "kind_source": "name"}

    assert code == 0
    assert embedding in models
    assert len(models) == 3


async def test_models_json_failure_on_stdout():
    url = f"http://127.0.0.1:{closed_port()}/v1"

    code, stdout, stderr = await run_cli(
        "models", "--json", "--upstream-url", url, env=cli_environment()
    )
    error = json.loads(stdout)["error"]

    assert code == 1
    assert error["check"] == "gateway_reachable"
    assert error["message"].startswith(f"Cannot connect to the model gateway at {url}")
    assert error["hint"]
    assert "akko-llm models: Cannot connect" in stderr


async def test_models_refused_exits_1():
    url = f"http://127.0.0.1:{closed_port()}/v1"

    code, stdout, stderr = await run_cli(
        "models", "--upstream-url", url, env=cli_environment()
    )

    assert code == 1
    assert stdout == ""
    assert f"akko-llm models: Cannot connect to the model gateway at {url}" in stderr
    assert "What to do:" in stderr



def flag_or_variable(
    from_flag: bool, flag: str, variable: str, value: str
) -> tuple[list[str], dict[str, str], str]:
    """Return the flags, the environment and the name a message should show for ``value``."""
    if from_flag:
        return [flag, value], cli_environment(), flag
    return [], cli_environment(**{variable: value}), f"${variable}"


@pytest.mark.parametrize("from_flag", [True, False], ids=["flag", "variable"])
async def test_models_refused_names_url_source(from_flag):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    flags, environment, source = flag_or_variable(
        from_flag, "--upstream-url", "AKKO_LLM_UPSTREAM_URL", url
    )

    code, _, stderr = await run_cli("models", *flags, env=environment)

    assert code == 1
    assert f"Check that the gateway is running and that {source} is right." in stderr
    assert f"What to do: The URL comes from {source}." in stderr
    assert "c.AkkoLLM" not in stderr


def test_cli_imports_no_jupyter_server():
    program = (
        "import sys, akko_jupyter_llm.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('jupyter_server')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_console_script_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later.
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    module_name, _, function_name = scripts["akko-llm"].partition(":")

    assert callable(getattr(importlib.import_module(module_name), function_name))


@pytest.fixture
def tls_gateway(jp_asyncio_loop, tmp_path):
    """An https gateway whose certificate comes from a private CA; returns (url, CA file)."""
    import trustme

    authority = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    runner, url, _ = start_https_upstream(jp_asyncio_loop, authority)
    yield url, ca_file
    jp_asyncio_loop.run_until_complete(runner.cleanup())


async def test_models_with_private_ca(tls_gateway):
    url, ca_file = tls_gateway
    code, untrusted, stderr = await run_cli(
        "models", "--upstream-url", url, env=cli_environment()
    )
    assert code == 1
    assert "or by the one in --ca-bundle or $AKKO_LLM_CA_BUNDLE." in stderr
    assert "c.AkkoLLM" not in stderr
    code, trusted, stderr = await run_cli(
        "models", "--upstream-url", url, "--ca-bundle", str(ca_file), env=cli_environment()
    )
    assert code == 0, trusted + stderr
    assert "qwen2.5:3b" in trusted
    code, from_env, stderr = await run_cli(
        "models", "--upstream-url", url, env=cli_environment(AKKO_LLM_CA_BUNDLE=str(ca_file))
    )
    assert code == 0, from_env + stderr


async def test_models_without_tls_verification(tls_gateway):
    url, _ = tls_gateway
    code, stdout, stderr = await run_cli(
        "models", "--upstream-url", url, "--no-verify-tls", env=cli_environment()
    )
    assert code == 0, stdout + stderr
    assert "qwen2.5:3b" in stdout


async def test_bad_tls_environment_is_usage_error(tls_gateway, tmp_path):
    url, _ = tls_gateway
    code, _, stderr = await run_cli(
        "doctor", "--upstream-url", url, env=cli_environment(AKKO_LLM_VERIFY_TLS="maybe")
    )
    assert code == 2
    assert "AKKO_LLM_VERIFY_TLS='maybe'" in stderr
    code, _, stderr = await run_cli(
        "doctor", "--upstream-url", url, "--ca-bundle", str(tmp_path / "missing.pem"),
        env=cli_environment(),
    )
    assert code == 2
    assert "missing.pem" in stderr


@pytest.mark.parametrize("from_flag", [True, False], ids=["flag", "variable"])
async def test_bad_ca_bundle_names_source(tmp_path, from_flag):
    missing = str(tmp_path / "missing.pem")
    url = f"http://127.0.0.1:{closed_port()}/v1"
    flags, environment, source = flag_or_variable(
        from_flag, "--ca-bundle", "AKKO_LLM_CA_BUNDLE", missing
    )

    code, _, stderr = await run_cli(
        "doctor", "--upstream-url", url, *flags, env=environment
    )

    assert code == 2
    assert f"akko-llm: error: {source} is {missing!r}, which cannot be loaded" in stderr
    assert f"or leave {source} empty to use the system's CAs" in stderr
    assert "c.AkkoLLM" not in stderr


# ------------------------------------------------------------ invalid keys

# Text after an injected line break; it must appear in no output either.
INJECTED_HEADER = "X-Evil: 1"
# Position of the first character after the key, counted from 1.
AFTER_KEY = len(GATEWAY_KEY) + 1


@pytest.mark.parametrize(
    ("key", "described"),
    [
        (
            f"{GATEWAY_KEY}\n{INJECTED_HEADER}",
            f"a line break (LF) at character {AFTER_KEY}",
        ),
        (
            f"{GATEWAY_KEY}\r\n{INJECTED_HEADER}",
            f"a carriage return (CR) at character {AFTER_KEY}",
        ),
        (f"{GATEWAY_KEY[:5]}\t{GATEWAY_KEY[5:]}", "a tab at character 6"),
        (f"{GATEWAY_KEY[:5]} {GATEWAY_KEY[5:]}", "a space at character 6"),
        (
            f"{GATEWAY_KEY[:5]}\x00{GATEWAY_KEY[5:]}",
            "a control character (U+0000) at character 6",
        ),
        (
            f"{GATEWAY_KEY[:5]}\u2011{GATEWAY_KEY[5:]}",
            "a non-ASCII character at character 6",
        ),
    ],
    ids=["line-break", "crlf", "tab", "space", "nul", "non-ascii"],
)
@pytest.mark.parametrize("command", ["doctor", "models"])
async def test_key_file_invalid_character(upstream, tmp_path, command, key, described):
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n", encoding="utf-8")

    code, stdout, stderr = await run_cli(
        command, "--upstream-url", upstream.url, "--api-key-file", str(key_file),
        env=cli_environment(),
    )
    output = " ".join((stdout + stderr).split())

    assert code == 1
    assert "Traceback" not in output
    assert f"The gateway key in the file {key_file} (--api-key-file)" in output
    assert "is invalid: it contains" in output
    assert f"it contains {described} of the key" in output
    assert "kubectl create secret generic" in output
    assert GATEWAY_KEY[5:] not in output
    assert INJECTED_HEADER not in output
    assert "c.AkkoLLM" not in output
    # No request carried the key to the gateway.
    assert all("Authorization" not in request.headers for request in upstream.requests)


@pytest.mark.parametrize("command", ["doctor", "models"])
async def test_environment_key_with_line_break(upstream, command):
    environment = cli_environment(AKKO_LLM_API_KEY=f"{GATEWAY_KEY}\n{INJECTED_HEADER}")

    code, stdout, stderr = await run_cli(
        command, "--upstream-url", upstream.url, env=environment
    )
    output = " ".join((stdout + stderr).split())

    assert code == 1
    assert "Traceback" not in output
    assert "The gateway key in $AKKO_LLM_API_KEY is invalid" in output
    assert f"a line break (LF) at character {AFTER_KEY} of the key" in output
    assert GATEWAY_KEY not in output
    assert INJECTED_HEADER not in output
    assert "c.AkkoLLM" not in output


async def test_key_file_not_utf8(upstream, tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_bytes(b"sk-\xff\xfe-binary")

    code, document, stderr = await doctor_json(
        "--upstream-url", upstream.url, "--api-key-file", str(key_file),
        env=cli_environment(),
    )
    key = checks_of(document)["key_accepted"]

    assert code == 1
    assert key["status"] == "error"
    assert f"{key_file} (--api-key-file) is not valid UTF-8 text" in key["message"]
    assert "byte 4 of the file cannot be decoded" in key["message"]
    assert "stringData" in key["message"]
    assert "UnicodeDecodeError" not in json.dumps(document) + stderr
    assert "binary" not in json.dumps(document)


async def test_unreadable_key_file_wording(upstream):
    code, document, _ = await doctor_json(
        "--upstream-url", upstream.url, "--api-key-file", MISSING_KEY_FILE,
        env=cli_environment(),
    )
    key = checks_of(document)["key_accepted"]

    assert code == 1
    assert "the user this process runs as can read it" in key["message"]
    assert "server" not in key["message"]
    assert "server" not in key["hint"]


async def test_invalid_url_hint_fits_command():
    code, document, _ = await doctor_json(
        "--upstream-url", "ftp://127.0.0.1/v1", env=cli_environment()
    )
    settings = checks_of(document)["settings_valid"]

    assert code == 1
    assert settings["hint"] == (
        "Fix the flag or environment variable named above, then run the command again."
    )


# ---------------------------------------------------- connection failure hints


async def failed_models_output(url: str) -> str:
    """Run ``akko-llm models`` against ``url``, check that it failed, return stderr."""
    code, stdout, stderr = await run_cli(
        "models", "--upstream-url", url, env=cli_environment()
    )
    assert code == 1
    assert stdout == ""
    assert "Traceback" not in stderr
    return stderr


async def test_loopback_refused_hint():
    stderr = await failed_models_output(f"http://127.0.0.1:{closed_port()}/v1")

    assert "model server on this machine is running" in stderr
    assert "kubectl" not in stderr
    assert "OOMKilled" not in stderr


def loopback_host_name() -> str | None:
    """Return this machine's host name if it resolves to loopback, else None."""
    name = socket.gethostname()
    if name == "localhost" or name.endswith(".localhost"):
        return None
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return None
    return name if ipaddress.ip_address(address).is_loopback else None


async def test_named_host_refused_hint():
    name = loopback_host_name()
    if name is None:
        pytest.skip("this machine's host name does not resolve to a loopback address")
    url = f"http://{name}:{closed_port()}/v1"

    stderr = await failed_models_output(url)

    assert f"Cannot connect to the model gateway at {url}" in stderr
    assert "kubectl get pods" in stderr
    assert "model server on this machine" not in stderr


async def test_tls_failure_has_no_kubernetes_hint(tls_gateway):
    url, _ = tls_gateway

    stderr = await failed_models_output(url)

    assert "TLS with the model gateway" in stderr
    assert "kubectl" not in stderr
    assert "model server on this machine" not in stderr


@pytest.fixture
def not_http_port(jp_asyncio_loop):
    """A port of 127.0.0.1 that responds to every connection with an SSH banner."""

    async def banner(reader, writer):
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        writer.close()

    server = jp_asyncio_loop.run_until_complete(
        asyncio.start_server(banner, "127.0.0.1", 0)
    )
    yield server.sockets[0].getsockname()[1]
    server.close()
    jp_asyncio_loop.run_until_complete(server.wait_closed())


async def test_non_http_port_no_kubernetes_hint(not_http_port):
    stderr = await failed_models_output(f"http://127.0.0.1:{not_http_port}/v1")

    assert "not valid HTTP" in stderr
    assert "kubectl" not in stderr
