"""Time the steps of streamed requests through the proxy, to explain their first-chunk delay.

Run as a module, it starts the fast upstream (benchmarks/upstream.py) and one Jupyter
server with this extension. It sends streams one after another, first straight to the
upstream and then through the proxy. It then prints when each step of the proxied
request ended, as medians from the client's start:

- ``handler created``: the request has crossed to the server and Tornado has parsed its
  headers and created the handler;
- ``Jupyter checks done``: jupyter_server's ``APIHandler.prepare`` (authentication, host
  and origin checks) has returned;
- ``handler checks done``: this extension's checks in ``prepare`` (route, settings,
  key, per-user limit) have returned;
- ``body read``: the request body has arrived and ``post`` starts;
- ``upstream headers``: the upstream's response headers have arrived;
- ``first event in``: the first event has been read from the upstream;
- ``first event out``: it has been written to the client's socket;
- ``client has it``: the client has read it.

Both clocks are ``time.monotonic()``, which all processes of a Linux machine share; the
client sends its start time in the ``X-Bench-Start`` header.

``--gap-ms`` sets the time between events, and so how long the processes sleep between
events. Loaded as a server extension (``benchmarks.phases``), this module wraps the
handler's steps with the clock and serves the records at ``{base_url}akko-bench/phases``.

Run from the repository root::

    .venvs/benchmark/bin/python -m benchmarks.phases --gap-ms 10
    .venvs/benchmark/bin/python -m benchmarks.phases --gap-ms 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

START_HEADER = "X-Bench-Start"

# The steps in the order they happen. Each record maps a step to its time.
STEPS = (
    "handler created",
    "Jupyter checks done",
    "handler checks done",
    "body read",
    "upstream headers",
    "first event in",
    "first event out",
)


# ------------------------------------------------------------ server side


def _load_jupyter_server_extension(serverapp) -> None:
    """Wrap the proxy handler's steps with the clock and add the records route."""
    from jupyter_server.base.handlers import APIHandler
    from tornado import web

    from akko_jupyter_llm import handlers, upstream

    records: list[dict[str, float]] = []
    proxy_class = handlers.ProxyHandler

    def stamp(handler, step: str) -> None:
        marks = getattr(handler, "_bench_marks", None)
        if marks is not None and step not in marks:
            marks[step] = time.monotonic()

    original_init = proxy_class.initialize
    original_prepare = proxy_class.prepare
    original_api_prepare = APIHandler.prepare
    original_post = proxy_class.post
    original_forward = proxy_class._forward
    original_flush = proxy_class.flush
    original_on_finish = proxy_class.on_finish
    original_open = upstream.UpstreamClient.open
    original_iter_body = upstream.UpstreamClient.iter_body

    def initialize(self, *args, **kwargs):
        start = self.request.headers.get(START_HEADER)
        if start:
            self._bench_marks = {"start": float(start)}
            stamp(self, "handler created")
        original_init(self, *args, **kwargs)

    async def prepare(self):
        await original_prepare(self)
        stamp(self, "handler checks done")

    async def api_prepare(self, *args, **kwargs):
        await original_api_prepare(self, *args, **kwargs)
        stamp(self, "Jupyter checks done")

    async def post(self, path):
        stamp(self, "body read")
        await original_post(self, path)

    async def forward(self, body, stream):
        # The upstream client passes the handler on to the response it opens.
        self.state.client._bench_handler = self
        await original_forward(self, body, stream)

    async def open_(self, *args, **kwargs):
        handler = getattr(self, "_bench_handler", None)
        response = await original_open(self, *args, **kwargs)
        if handler is not None:
            stamp(handler, "upstream headers")
            response._bench_handler = handler
        return response

    async def iter_body(self, response):
        handler = getattr(response, "_bench_handler", None)
        async for chunk in original_iter_body(self, response):
            if handler is not None:
                stamp(handler, "first event in")
            yield chunk

    def flush(self, *args, **kwargs):
        result = original_flush(self, *args, **kwargs)
        if getattr(self, "_bench_marks", None) and "first event in" in self._bench_marks:
            stamp(self, "first event out")
        return result

    def on_finish(self):
        marks = getattr(self, "_bench_marks", None)
        if marks:
            records.append(marks)
        original_on_finish(self)

    proxy_class.initialize = initialize
    proxy_class.prepare = prepare
    APIHandler.prepare = api_prepare
    proxy_class.post = post
    proxy_class._forward = forward
    proxy_class.flush = flush
    proxy_class.on_finish = on_finish
    upstream.UpstreamClient.open = open_
    upstream.UpstreamClient.iter_body = iter_body

    class RecordsHandler(APIHandler):
        @web.authenticated
        def get(self):
            self.finish(json.dumps(records))

    serverapp.web_app.add_handlers(
        ".*$", [(serverapp.base_url + "akko-bench/phases", RecordsHandler)]
    )


def _jupyter_server_extension_points():
    return [{"module": "benchmarks.phases"}]


# ------------------------------------------------------------ client side


async def first_event_times(
    url: str, headers: dict[str, str], count: int, events: int
) -> list[float]:
    """Run ``count`` streams one after another and return the times to their first event."""
    import aiohttp

    body = json.dumps(
        {
            "model": "gap",
            "stream": True,
            "max_tokens": events,
            "messages": [{"role": "user", "content": "benchmark"}],
        }
    )
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.monotonic()
            request_headers = {
                **headers,
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
                START_HEADER: f"{started:.6f}",
            }
            async with session.post(url, data=body, headers=request_headers) as response:
                async for line in response.content:
                    if line.startswith(b"data:"):
                        times.append(time.monotonic() - started)
                        break
                await response.read()
    return times


def _median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.3f}"


def main() -> None:
    from benchmarks.run import start_jupyter, start_upstream

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap-ms", type=float, default=10.0, help="time between events")
    parser.add_argument("--streams", type=int, default=60, help="streams per path")
    parser.add_argument("--events", type=int, default=20, help="events per stream")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="akko-phases-") as temporary:
        work_dir = Path(temporary)
        upstream = start_upstream(work_dir, args.gap_ms)
        token = secrets.token_hex(16)
        server = None
        try:
            server = start_jupyter(
                "akko", work_dir, token, f"{upstream.url}/v1",
                {
                    "akko_jupyter_llm": True,
                    "jupyter_server_proxy": False,
                    "benchmarks.phases": True,
                },
            )
            auth = {"Authorization": f"token {token}"}
            chat = "v1/chat/completions"
            # The first streams of each path warm up connections and caches.
            warm_up = 5
            count = args.streams + warm_up
            direct = asyncio.run(
                first_event_times(f"{upstream.url}/{chat}", {}, count, args.events)
            )[warm_up:]
            proxied = asyncio.run(
                first_event_times(f"{server.url}/akko-llm/{chat}", auth, count, args.events)
            )[warm_up:]
            import urllib.request

            request = urllib.request.Request(f"{server.url}/akko-bench/phases", headers=auth)
            with urllib.request.urlopen(request, timeout=30) as answer:
                records = json.load(answer)[warm_up:]
        finally:
            if server is not None:
                server.stop()
            upstream.stop()

    complete = [record for record in records if all(step in record for step in STEPS)]
    if not complete:
        sys.exit("no proxied request recorded every step; see the server log")
    print(f"{len(complete)} streams of {args.events} events, {args.gap_ms:g} ms apart")
    print(f"direct: first event after {_median_ms(direct)} ms (median)")
    print("through the proxy, median time from the client's start:")
    previous = "start"
    for step in STEPS:
        ended = [record[step] - record["start"] for record in complete]
        took = [record[step] - record[previous] for record in complete]
        print(f"  {step:<22} {_median_ms(ended):>8} ms  (step {_median_ms(took)} ms)")
        previous = step
    print(f"  {'client has it':<22} {_median_ms(proxied):>8} ms")


if __name__ == "__main__":
    main()
