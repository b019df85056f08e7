"""The asyncio stream client of the benchmark, run as a separate process.

It reads one job as JSON from the command line, runs it against one path and
prints the result as JSON. Every path gets the same client and the same request
apart from its URL and headers.

- ``sequential``: ``count`` streams one after another. For each it records the
  time to the first chunk and, for every chunk, the one-way delay from the
  upstream's send time (carried in the chunk's content) to its arrival here,
  plus the stream's total duration.
- ``concurrent``: ``count`` streams started at once. It counts the streams that
  end intact (every chunk, in order, then ``[DONE]``) and meanwhile polls
  ``status_url`` every ``status_interval`` seconds, recording each latency.
  With ``count`` 0 and ``idle_seconds`` it only polls, for a baseline.

All times are ``time.monotonic()``, the same clock the upstream stamps chunks
with.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

import aiohttp

CONTENT_PATTERN = re.compile(rb'"content":"(\d+):([0-9.]+)"')


async def run_stream(
    session: aiohttp.ClientSession, job: dict, chunks: int
) -> dict:
    """Run one stream and return its timings and whether it arrived intact."""
    body = json.dumps(
        {
            "model": job["model"],
            "stream": True,
            "max_tokens": chunks,
            "messages": [{"role": "user", "content": "benchmark"}],
        }
    )
    delays: list[float] = []
    expected_index = 0
    done = False
    first_chunk = None
    started = time.monotonic()
    try:
        async with session.post(job["url"], data=body, headers=job["headers"]) as response:
            status = response.status
            async for line in response.content:
                arrived = time.monotonic()
                if not line.startswith(b"data:"):
                    continue
                if line.startswith(b"data: [DONE]"):
                    done = True
                    continue
                match = CONTENT_PATTERN.search(line)
                if match is None:
                    continue
                if first_chunk is None:
                    first_chunk = arrived - started
                if int(match.group(1)) == expected_index:
                    expected_index += 1
                delays.append(arrived - float(match.group(2)))
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        return {"intact": False, "error": f"{type(error).__name__}: {error}"}
    return {
        "status": status,
        "intact": status == 200 and done and expected_index == chunks,
        "first_chunk": first_chunk,
        "duration": time.monotonic() - started,
        "delays": delays,
    }


async def poll_status(
    session: aiohttp.ClientSession, job: dict, stop: asyncio.Event
) -> list[float]:
    """Request ``status_url`` at a fixed interval until ``stop`` is set."""
    latencies: list[float] = []
    while not stop.is_set():
        started = time.monotonic()
        async with session.get(job["status_url"], headers=job["status_headers"]) as response:
            await response.read()
            if response.status == 200:
                latencies.append(time.monotonic() - started)
        try:
            await asyncio.wait_for(stop.wait(), job["status_interval"])
        except asyncio.TimeoutError:
            pass
    return latencies


async def run_job(job: dict) -> dict:
    timeout = aiohttp.ClientTimeout(total=job.get("timeout", 300))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if job["mode"] == "sequential":
            streams = [await run_stream(session, job, job["chunks"]) for _ in range(job["count"])]
            return {"streams": streams}

        # A second session, so that status requests never wait for a stream's
        # connection in the pool.
        status_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=timeout
        )
        stop = asyncio.Event()
        poller = None
        if job.get("status_url"):
            poller = asyncio.ensure_future(poll_status(status_session, job, stop))
        started = time.monotonic()
        streams = await asyncio.gather(
            *(run_stream(session, job, job["chunks"]) for _ in range(job["count"]))
        )
        if job.get("idle_seconds"):
            await asyncio.sleep(job["idle_seconds"])
        elapsed = time.monotonic() - started
        stop.set()
        status_latencies = await poller if poller else []
        await status_session.close()
        for stream in streams:
            stream.pop("delays", None)
        return {
            "elapsed": elapsed,
            "intact": sum(1 for stream in streams if stream["intact"]),
            "errors": sorted({stream.get("error", "") for stream in streams} - {""})[:5],
            "status_latencies": status_latencies,
        }


def main() -> None:
    job = json.loads(sys.argv[1])
    result = asyncio.run(run_job(job))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
