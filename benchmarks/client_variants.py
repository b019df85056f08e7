"""Other HTTP clients behind the same proxy handler, for the benchmark only.

Loaded as a Jupyter server extension beside ``akko_jupyter_llm``, this module
replaces the extension's aiohttp `UpstreamClient` with the client named by the
environment variable ``AKKO_BENCH_CLIENT``, so that benchmarks/run.py can
measure each candidate through the real handler:

- ``tornado-simple``: Tornado's ``SimpleAsyncHTTPClient`` (one new connection
  per request, since it has no keep-alive);
- ``tornado-curl``: Tornado's ``CurlAsyncHTTPClient`` (pycurl, pooled);
- ``httpx``: ``httpx.AsyncClient`` (pooled).

NOTE: these adapters translate no network error into the proxy's messages and
apply only the connect and idle timeouts. They are fit for measuring speed on
a healthy upstream, not for serving users.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from tornado import httputil
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from akko_jupyter_llm.errors import ProxyError
from akko_jupyter_llm.upstream import UpstreamClient

# Long enough for any benchmark stream; Tornado's default is 20 s in total.
TORNADO_REQUEST_TIMEOUT = 3600.0


class TornadoResponse:
    """The parts of `aiohttp.ClientResponse` that the handler reads."""

    def __init__(self) -> None:
        self.status = 0
        self.reason = ""
        self.headers = httputil.HTTPHeaders()
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.headers_received = asyncio.get_running_loop().create_future()
        self.fetch: asyncio.Future | None = None

    def on_header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            start_line = httputil.parse_response_start_line(line.strip())
            self.status, self.reason = start_line.code, start_line.reason
            self.headers = httputil.HTTPHeaders()
        elif line.strip():
            self.headers.parse_line(line)
        elif self.status != 100 and not self.headers_received.done():
            self.headers_received.set_result(None)

    def on_done(self, fetch: asyncio.Future) -> None:
        if not self.headers_received.done():
            self.headers_received.set_result(None)
        self.chunks.put_nowait(None)

    def release(self) -> None:
        pass

    def close(self) -> None:
        if self.fetch is not None and not self.fetch.done():
            self.fetch.cancel()


class TornadoUpstreamClient(UpstreamClient):
    """`UpstreamClient` on Tornado's simple or curl HTTP client."""

    def __init__(self, settings, log, implementation: str) -> None:
        super().__init__(settings, log)
        AsyncHTTPClient.configure(implementation, max_clients=10_000)
        self._client = AsyncHTTPClient(force_instance=True)

    async def open(self, method, url, headers, body) -> TornadoResponse:
        response = TornadoResponse()
        request = HTTPRequest(
            str(url),
            method=method,
            headers=headers,
            body=body,
            header_callback=response.on_header_line,
            streaming_callback=response.chunks.put_nowait,
            connect_timeout=self.settings.connect_timeout,
            request_timeout=TORNADO_REQUEST_TIMEOUT,
            follow_redirects=False,
            decompress_response=False,
            allow_nonstandard_methods=True,
        )
        response.fetch = asyncio.ensure_future(self._client.fetch(request, raise_error=False))
        response.fetch.add_done_callback(response.on_done)
        await response.headers_received
        if response.status == 0 or response.status == 599:
            raise ProxyError(502, f"Upstream request failed: {response.fetch.result()}")
        return response

    async def iter_body(self, response: TornadoResponse) -> AsyncIterator[bytes]:
        while True:
            chunk = await asyncio.wait_for(response.chunks.get(), self.settings.idle_timeout)
            if chunk is None:
                return
            yield chunk

    async def close(self) -> None:
        self._client.close()


class HttpxResponse:
    """The parts of `aiohttp.ClientResponse` that the handler reads."""

    def __init__(self, response) -> None:
        self.response = response
        self.status = response.status_code
        self.reason = response.reason_phrase
        self.headers = response.headers

    def release(self) -> None:
        # httpx returns the connection to the pool once the body is read.
        pass

    def close(self) -> None:
        asyncio.ensure_future(self.response.aclose())


class HttpxUpstreamClient(UpstreamClient):
    """`UpstreamClient` on ``httpx.AsyncClient``."""

    def __init__(self, settings, log) -> None:
        import httpx

        super().__init__(settings, log)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.idle_timeout,
                write=None,
                pool=None,
            ),
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=1000, keepalive_expiry=60
            ),
            follow_redirects=False,
        )

    async def open(self, method, url, headers, body) -> HttpxResponse:
        request = self._client.build_request(method, str(url), headers=headers, content=body)
        return HttpxResponse(await self._client.send(request, stream=True))

    async def iter_body(self, response: HttpxResponse) -> AsyncIterator[bytes]:
        async for chunk in response.response.aiter_raw():
            yield chunk

    async def close(self) -> None:
        await self._client.aclose()


def make_client(name: str, settings, log) -> UpstreamClient:
    if name == "tornado-simple":
        return TornadoUpstreamClient(
            settings, log, "tornado.simple_httpclient.SimpleAsyncHTTPClient"
        )
    if name == "tornado-curl":
        return TornadoUpstreamClient(settings, log, "tornado.curl_httpclient.CurlAsyncHTTPClient")
    if name == "httpx":
        return HttpxUpstreamClient(settings, log)
    raise ValueError(f"unknown client variant {name!r}")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "benchmarks.client_variants"}]


def _load_jupyter_server_extension(serverapp) -> None:
    name = os.environ.get("AKKO_BENCH_CLIENT", "")

    def replace_client() -> None:
        # Run once every extension is loaded, so that the proxy state exists.
        for app in serverapp.extension_manager.extension_apps.get("akko_jupyter_llm", ()):
            state = app.proxy_state
            state.client = make_client(name, state.settings, state.log)
            serverapp.log.info("benchmark: upstream client replaced by %s", name)

    if name:
        serverapp.io_loop.add_callback(replace_client)
