"""Soak test of the proxy: many mixed requests, every byte checked.

`run_soak` sends a deterministic mix of requests through the proxy to the
project's OpenAI-compatible test upstream: streamed and not, request bodies
from a few bytes to a few MB, from several clients at once (the server token in
``Authorization: token``, the same as ``Bearer``, and a browser session cookie
with its XSRF token). The upstream answers each with the SHA-256 of the body it
received and deterministic text (``x_test`` ``echo``, ``padding``, ``seed``),
so the client checks both directions byte for byte.

The test suite runs a short version (tests/test_soak.py). The full one starts
its own Jupyter server in a child process, so that the server's file
descriptors and memory can be measured apart from the client's::

    .venv/bin/python -m tests.soak --requests 10000

It exits with status 1 when a request is lost, corrupted or answered with an
unexpected status, or when the server's open file descriptors or resident
memory grew between the end of the warm-up and the end of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from tests.upstreams.openai_compat import OpenAIUpstream, echo_document, padding_text

# Request body sizes in bytes and how often each range is drawn.
BODY_SIZES = [((10, 1_000), 70), ((1_000, 100_000), 25), ((100_000, 3_000_000), 5)]
# Characters of deterministic text per streamed event or non-streamed answer.
REPLY_SIZES = [((0, 200), 60), ((200, 20_000), 35), ((20_000, 1_000_000), 5)]


@dataclass(frozen=True)
class PlannedRequest:
    index: int
    route: str
    stream: bool
    body: bytes
    control: dict
    client: int
    events: int


def _draw(rng: random.Random, table) -> int:
    ranges = [bounds for bounds, _weight in table]
    weights = [weight for _bounds, weight in table]
    low, high = rng.choices(ranges, weights)[0]
    return rng.randint(low, high)


def plan_requests(count: int, clients: int, seed: int) -> list[PlannedRequest]:
    """Return ``count`` requests, the same for the same arguments."""
    rng = random.Random(seed)
    planned = []
    for index in range(count):
        stream = rng.random() < 0.5
        route = rng.choice(
            ["chat/completions", "completions"]
            if stream
            else ["chat/completions", "completions", "embeddings"]
        )
        events = rng.randint(1, 8) if stream else 0
        reply = _draw(rng, REPLY_SIZES)
        if stream:
            reply //= events
        control = {"echo": True, "padding": reply, "seed": f"{seed}-{index}", "chunks": events}
        filler = padding_text(f"body-{seed}", index, _draw(rng, BODY_SIZES))
        payload = {
            "model": "qwen2.5:3b",
            "stream": stream,
            "messages": [{"role": "user", "content": filler}],
            "x_test": control,
        }
        planned.append(
            PlannedRequest(
                index=index,
                route=route,
                stream=stream,
                body=json.dumps(payload).encode(),
                control=control,
                client=index % clients,
                events=events,
            )
        )
    return planned


def expected_answer(request: PlannedRequest) -> bytes:
    """Return the exact bytes the upstream sends for ``request``."""
    if not request.stream:
        return json.dumps(echo_document(request.body, request.control)).encode()
    events = [b"data: " + json.dumps(echo_document(request.body, {})).encode() + b"\n\n"]
    for index in range(request.events):
        content = padding_text(request.control["seed"], index, request.control["padding"])
        if not request.control["padding"]:
            content = None
        events.append(OpenAIUpstream.chunk_event(index, "qwen2.5:3b", content))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


@dataclass
class SoakResult:
    sent: int = 0
    ok: int = 0
    lost: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    unexpected_status: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    statuses: Counter = field(default_factory=Counter)

    @property
    def failures(self) -> list[str]:
        return self.lost + self.corrupted + self.unexpected_status

    def summary(self) -> str:
        return (
            f"{self.sent} requests: {self.ok} ok, {len(self.lost)} lost, "
            f"{len(self.corrupted)} corrupted, {len(self.unexpected_status)} with an "
            f"unexpected status; {self.bytes_sent / 1e6:.1f} MB sent, "
            f"{self.bytes_received / 1e6:.1f} MB received"
        )


async def login_cookies(
    session: aiohttp.ClientSession, server_url: str, base_url: str, token: str
) -> dict[str, str]:
    """Log in with the token as a browser does; return the session cookies.

    Cookies are kept by hand because aiohttp matches a cookie's Path against
    the decoded request path, and a base URL such as /a%40b/ decodes to /a@b/.
    """
    login = URL(f"{server_url}{base_url}login", encoded=True)
    async with session.get(login, allow_redirects=False) as response:
        cookies = {name: morsel.value for name, morsel in response.cookies.items()}
    async with session.post(
        login,
        data={"password": token, "_xsrf": cookies["_xsrf"]},
        headers={"Cookie": _cookie_header(cookies)},
        allow_redirects=False,
    ) as response:
        if response.status not in (302, 303):
            raise RuntimeError(f"login with the token failed: HTTP {response.status}")
        cookies.update({name: morsel.value for name, morsel in response.cookies.items()})
    return cookies


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def client_headers(token: str, cookies: dict[str, str]) -> list[dict[str, str]]:
    """Return the headers of the three kinds of client: token, Bearer, browser."""
    return [
        {"Authorization": f"token {token}"},
        {"Authorization": f"Bearer {token}"},
        {"Cookie": _cookie_header(cookies), "X-XSRFToken": cookies["_xsrf"]},
    ]


async def run_soak(
    session: aiohttp.ClientSession,
    endpoint: str,
    clients: list[dict[str, str]],
    count: int,
    concurrency: int,
    seed: int = 1,
    on_progress=None,
) -> SoakResult:
    """Send ``count`` planned requests to ``endpoint``, ``concurrency`` at a time."""
    result = SoakResult()
    queue: asyncio.Queue[PlannedRequest] = asyncio.Queue()
    for request in plan_requests(count, len(clients), seed):
        queue.put_nowait(request)

    async def worker() -> None:
        while not queue.empty():
            request = queue.get_nowait()
            await _send_one(session, endpoint, clients[request.client], request, result)
            if on_progress is not None:
                await on_progress(result)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


async def _send_one(session, endpoint, headers, request: PlannedRequest, result) -> None:
    url = URL(f"{endpoint}/{request.route}", encoded=True)
    headers = dict(headers, **{"Content-Type": "application/json"})
    label = f"#{request.index} {request.route} stream={request.stream} body={len(request.body)}"
    result.sent += 1
    result.bytes_sent += len(request.body)
    try:
        async with session.post(url, data=request.body, headers=headers) as response:
            received = await response.read()
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        result.lost.append(f"{label}: {type(error).__name__}: {error}")
        return
    result.statuses[status] += 1
    result.bytes_received += len(received)
    if status != 200:
        result.unexpected_status.append(f"{label}: HTTP {status}: {received[:300]!r}")
        return
    expected = expected_answer(request)
    if received != expected:
        result.corrupted.append(
            f"{label}: {len(received)} bytes received, {len(expected)} expected, "
            f"SHA-256 {hashlib.sha256(received).hexdigest()[:16]} against "
            f"{hashlib.sha256(expected).hexdigest()[:16]}"
        )
        return
    result.ok += 1


# ------------------------------------------------------------ command line


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_usage(pid: int) -> tuple[int, int]:
    """Return the open file descriptors and resident memory (bytes) of ``pid``."""
    descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return descriptors, int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def _start_server(workdir: str, upstream_url: str, key: str, token: str, base_url: str):
    """Start a Jupyter server with the extension on 127.0.0.1; return it and its URL."""
    config_dir = os.path.join(workdir, "config")
    os.makedirs(config_dir, exist_ok=True)
    config = {
        "ServerApp": {
            "jpserver_extensions": {
                "akko_jupyter_llm": True,
                "jupyter_server_terminals": False,
                "jupyter_ai": False,
            },
            "allow_unauthenticated_access": False,
        },
        "IdentityProvider": {"token": token},
        "AkkoLLM": {"upstream_url": upstream_url, "max_concurrent_requests": 0},
    }
    with open(os.path.join(config_dir, "jupyter_server_config.json"), "w") as file:
        json.dump(config, file)
    port = _free_port()
    environment = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=config_dir,
        JUPYTER_RUNTIME_DIR=os.path.join(workdir, "runtime"),
        JUPYTER_DATA_DIR=os.path.join(workdir, "data"),
        AKKO_LLM_API_KEY=key,
    )
    command = [
        sys.executable, "-m", "jupyter_server", "--ip=127.0.0.1", f"--port={port}",
        "--port-retries=0", "--no-browser", "--allow-root", f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={workdir}", "--ServerApp.log_level=WARN",
    ]
    log = open(os.path.join(workdir, "server.log"), "wb")
    server = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    return server, f"http://127.0.0.1:{port}"


async def _wait_until_up(session, server, server_url, base_url, token, workdir) -> None:
    deadline = time.monotonic() + 60
    url = URL(f"{server_url}{base_url}api/status", encoded=True)
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the Jupyter server exited; see {workdir}/server.log")
        try:
            async with session.get(url, headers={"Authorization": f"token {token}"}) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the Jupyter server did not start within 60 s; see {workdir}/server.log")


async def main_async(arguments) -> int:
    key = "sk-soak-" + secrets.token_hex(16)
    token = secrets.token_hex(24)
    base_url = "/a%40b/"
    upstream = await OpenAIUpstream(expected_key=key).start()
    workdir = tempfile.mkdtemp(prefix="akko-soak-")
    server, server_url = _start_server(workdir, upstream.url, key, token, base_url)
    session = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=arguments.request_timeout),
        connector=aiohttp.TCPConnector(limit=0),
    )
    try:
        await _wait_until_up(session, server, server_url, base_url, token, workdir)
        cookies = await login_cookies(session, server_url, base_url, token)
        clients = client_headers(token, cookies)
        endpoint = f"{server_url}{base_url}akko-llm/v1"

        warm_up = max(arguments.requests // 10, arguments.concurrency)
        warm = await run_soak(session, endpoint, clients, warm_up, arguments.concurrency,
                              seed=arguments.seed + 1)
        await asyncio.sleep(1)
        fds_before, rss_before = process_usage(server.pid)
        upstream.requests.clear()

        started = time.monotonic()

        async def progress(result: SoakResult) -> None:
            if result.sent % 1000 == 0:
                print(f"  {result.sent} sent, {len(result.failures)} failed", flush=True)
            # The upstream's request log would grow with every body.
            upstream.requests.clear()

        result = await run_soak(session, endpoint, clients, arguments.requests,
                                arguments.concurrency, seed=arguments.seed,
                                on_progress=progress)
        elapsed = time.monotonic() - started
        await asyncio.sleep(1)
        fds_after, rss_after = process_usage(server.pid)
    finally:
        await session.close()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        await upstream.stop()

    print(f"warm-up: {warm.summary()}")
    print(f"soak: {result.summary()} in {elapsed:.1f} s")
    print(f"server file descriptors: {fds_before} -> {fds_after}")
    print(f"server resident memory: {rss_before / 1e6:.1f} MB -> {rss_after / 1e6:.1f} MB")
    for failure in result.failures[:20]:
        print(f"  {failure}")

    problems = []
    if result.failures or warm.failures:
        problems.append("requests failed")
    if fds_after > fds_before:
        problems.append("file descriptors grew")
    if rss_after > rss_before + arguments.max_rss_growth * 1e6:
        problems.append(f"resident memory grew by more than {arguments.max_rss_growth} MB")
    if problems:
        print("FAILED: " + "; ".join(problems) + f" (server log in {workdir})")
        return 1
    print("OK")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="number of requests")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests in flight at once")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request mix")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="seconds before one request counts as lost")
    parser.add_argument("--max-rss-growth", type=float, default=50.0,
                        help="MB the server's resident memory may grow after the "
                        "warm-up (the allocator keeps some freed memory)")
    arguments = parser.parse_args()
    return asyncio.run(main_async(arguments))


if __name__ == "__main__":
    sys.exit(main())
