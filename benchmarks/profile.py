"""Profile the Jupyter server with this extension under benchmark load, with py-spy.

Starts the fast upstream and one Jupyter server (as benchmarks/run.py does),
then samples the server with ``py-spy record`` while wrk sends plain requests
at concurrency 16, and again while 200 streams run at once. For each phase it
writes the collapsed stacks (``<phase>.txt``, for flame graph tools or
speedscope) and prints the functions with the largest share of samples, by own
time and including callees.

Run from the repository root (py-spy needs ptrace, so run as root or with
``CAP_SYS_PTRACE``)::

    .venv/bin/python -m benchmarks.profile --output benchmarks/profiles
"""

from __future__ import annotations

import argparse
import collections
import secrets
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.run import (
    FULL,
    Endpoint,
    run_stream_client,
    run_wrk,
    start_jupyter,
    start_upstream,
    stream_job,
    wrk_script,
)

SAMPLING_RATE = 250  # samples per second


def summarize_stacks(collapsed: Path, top: int) -> str:
    """Return the ``top`` functions by own and inclusive share of the samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_short_frame(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in own.most_common(top)]
    lines += ["", "including callees:"]
    lines += [
        f"  {count / total:6.1%}  {frame}" for frame, count in inclusive.most_common(top)
    ]
    return "\n".join(lines)


# Packages that samples are counted under, by the innermost frame that is in one of
# them. The first name found in a frame's path wins, so tornado/platform/asyncio.py
# counts as Tornado.
PACKAGES = (
    "akko_jupyter_llm", "jupyter_server", "tornado", "aiohttp", "asyncio", "selectors",
    "http/cookies", "logging",
)


def summarize_packages(collapsed: Path) -> str:
    """Return the share of the event loop's samples per package of the innermost frame."""
    shares: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or "_run_once" not in stack:
            continue  # Not the event loop: the interpreter's start or an idle thread.
        package = "other"
        for frame in reversed(stack.split(";")):
            location = frame.partition(" (")[2]
            package = next((name for name in PACKAGES if name in location), "")
            if package:
                break
        shares[package or "other"] += int(count_text)
    total = sum(shares.values())
    lines = [f"by package ({total} samples in the event loop):"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in shares.most_common()]
    return "\n".join(lines)


def _short_frame(frame: str) -> str:
    """Shorten ``function (/long/path/site-packages/pkg/mod.py:12)`` to ``function (pkg/mod.py)``."""
    name, _, location = frame.partition(" (")
    location = location.rstrip(")")
    for marker in ("site-packages/", "lib/python3"):
        if marker in location:
            location = location.split(marker, 1)[1]
    location = location.rsplit(":", 1)[0]
    return f"{name} ({location})"


def record(pid: int, seconds: float, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", str(SAMPLING_RATE), "--format", "raw", "--output", str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/profiles"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="akko-profile-") as temporary:
        work_dir = Path(temporary)
        upstream = start_upstream(work_dir, FULL.gap_ms)
        token = secrets.token_hex(16)
        try:
            server = start_jupyter(
                "akko", work_dir, token, f"{upstream.url}/v1",
                {"akko_jupyter_llm": True, "jupyter_server_proxy": False},
            )
        except Exception:
            upstream.stop()
            raise
        try:
            path = Endpoint(
                "akko", f"{server.url}/akko-llm", {"Authorization": f"token {token}"}, server
            )
            script = wrk_script(work_dir, path)
            run_wrk(script, path.chat_url(), 16, 2, server.pid)  # warm-up

            collapsed = args.output / "requests-c16.txt"
            profiler = record(server.pid, args.seconds, collapsed)
            result = run_wrk(script, path.chat_url(), 16, args.seconds, server.pid)
            profiler.wait()
            print(f"== plain requests, concurrency 16: {result['requests_per_second']:.0f} req/s")
            print(summarize_stacks(collapsed, args.top), flush=True)
            print(summarize_packages(collapsed), flush=True)

            collapsed = args.output / "streams-200.txt"
            profiler = record(server.pid, args.seconds, collapsed)
            streams: dict = {}
            client = threading.Thread(
                target=lambda: streams.update(
                    run_stream_client(stream_job(path, "gap", 200, 400, "concurrent"))
                )
            )
            client.start()
            profiler.wait()
            client.join()
            print(f"\n== 200 concurrent streams: {streams.get('intact')} intact")
            print(summarize_stacks(collapsed, args.top))
            print(summarize_packages(collapsed))
        finally:
            server.stop()
            upstream.stop()


if __name__ == "__main__":
    main()
