"""Measure what the proxy adds, beside jupyter-server-proxy and LiteLLM.

One command starts, on 127.0.0.1 only: the fast upstream (benchmarks/upstream.py),
a Jupyter server with this extension, a Jupyter server with jupyter-server-proxy
4.x, and a LiteLLM proxy, all pointing at that upstream. It then measures every
path in the same run, interleaved round by round so that machine noise hits all
paths alike:

- ``direct``: the upstream itself (the floor);
- ``akko``: ``{base_url}akko-llm/v1`` of this extension;
- ``jupyter-server-proxy``: ``/proxy/<port>/v1`` (streams send
  ``Accept: text/event-stream``, without which it buffers the whole response);
- ``litellm``: a LiteLLM proxy with a master key and no database.

Plain requests come from wrk, streams from benchmarks/stream_client.py; both
run as separate processes and use the same request on every path. Results go
to a JSON file, and the tables that docs/benchmarks.md shows go to stdout.

Run from the repository root::

    .venv/bin/python -m benchmarks.run            # about 7 minutes on 2 cores
    .venv/bin/python -m benchmarks.run --quick    # about 1 minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil
import yaml

from tests.servers.process import HOST, ServerProcess, start_server

REPOSITORY = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHAT_PATH = "v1/chat/completions"
CONST_BODY = json.dumps(
    {"model": "const", "messages": [{"role": "user", "content": "benchmark"}]}
)

# Client variants of this extension that --clients can add as further paths,
# each in a Jupyter server of its own (see benchmarks/client_variants.py).
CLIENT_VARIANTS = ("tornado-simple", "tornado-curl", "httpx")


@dataclass(frozen=True)
class Profile:
    """How long and how often each measurement runs."""

    rounds: int
    wrk_seconds: float
    concurrencies: tuple[int, ...]
    gap_streams: int
    gap_chunks: int
    fast_streams: int
    fast_chunks: int
    concurrent_streams: int
    concurrent_chunks: int
    gap_ms: float


FULL = Profile(
    rounds=3,
    wrk_seconds=5,
    concurrencies=(1, 16, 64),
    gap_streams=30,
    gap_chunks=20,
    fast_streams=10,
    fast_chunks=1000,
    concurrent_streams=200,
    concurrent_chunks=200,
    gap_ms=10,
)
QUICK = Profile(
    rounds=1,
    wrk_seconds=2,
    concurrencies=(1, 16, 64),
    gap_streams=10,
    gap_chunks=20,
    fast_streams=3,
    fast_chunks=500,
    concurrent_streams=200,
    concurrent_chunks=50,
    gap_ms=10,
)


@dataclass
class Endpoint:
    """One way to reach the upstream (a path of the report), and the process it measures."""

    name: str
    url: str
    headers: dict[str, str]
    process: ServerProcess
    status_url: str = ""
    results: dict = field(default_factory=dict)

    def chat_url(self) -> str:
        return f"{self.url}/{CHAT_PATH}"


# ---------------------------------------------------------------- servers


def start_upstream(work_dir: Path, gap_ms: float) -> ServerProcess:
    return start_server(
        "upstream",
        lambda port: [
            PYTHON, "-m", "benchmarks.upstream", "--port", str(port),
            "--gap-ms", str(gap_ms),
        ],
        "/v1/models",
        work_dir / "upstream.log",
        cwd=REPOSITORY,
    )


def start_jupyter(
    name: str,
    work_dir: Path,
    token: str,
    upstream_url: str,
    extensions: dict[str, bool],
    client_variant: str | None = None,
    package_dir: Path = REPOSITORY,
) -> ServerProcess:
    """Start a Jupyter server with the given extensions switched on or off.

    ``package_dir`` is the directory that contains the ``akko_jupyter_llm`` to load,
    this repository unless another checkout is compared.
    """
    server_dir = work_dir / name
    root_dir = server_dir / "root"
    root_dir.mkdir(parents=True, exist_ok=True)
    switches = [
        f"--ServerApp.jpserver_extensions={extension}={enabled}"
        for extension, enabled in extensions.items()
    ]
    environment = {
        "JUPYTER_CONFIG_DIR": str(server_dir / "config"),
        "JUPYTER_RUNTIME_DIR": str(server_dir / "runtime"),
        "JUPYTER_DATA_DIR": str(server_dir / "data"),
        # The server starts in package_dir, whose package comes first on sys.path.
        "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(package_dir), str(REPOSITORY)])),
        "AKKO_LLM_API_KEY": None,
        "AKKO_LLM_API_KEY_FILE": None,
        "AKKO_BENCH_CLIENT": client_variant,
    }
    return start_server(
        name,
        lambda port: [
            PYTHON, "-m", "jupyter_server",
            f"--ServerApp.port={port}", "--port-retries=0",
            f"--ServerApp.ip={HOST}", f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root_dir}",
            "--allow-root", "--no-browser",
            f"--AkkoLLM.upstream_url={upstream_url}",
            "--AkkoLLM.max_concurrent_requests=0",
            *switches,
        ],
        "/api/status?token=" + token,
        server_dir / "server.log",
        env=environment,
        cwd=package_dir,
        timeout=90,
    )


def start_litellm(work_dir: Path, upstream_url: str, master_key: str) -> ServerProcess:
    """Start a LiteLLM proxy whose models const, fast and gap go to the upstream."""
    litellm_dir = work_dir / "litellm"
    litellm_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{name}",
                    "api_base": upstream_url,
                    "api_key": "unused",
                },
            }
            for name in ("const", "fast", "gap")
        ],
        "general_settings": {"master_key": master_key},
        "router_settings": {"disable_cooldowns": True},
    }
    config_path = litellm_dir / "litellm.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return start_server(
        "LiteLLM proxy",
        lambda port: [
            PYTHON, "-m", "litellm.proxy.proxy_cli", "--config", str(config_path),
            "--host", HOST, "--port", str(port), "--num_workers", "1",
        ],
        "/health/liveliness",
        litellm_dir / "litellm.log",
        env={
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "DATABASE_URL": None,
            "LITELLM_MASTER_KEY": None,
            "STORE_MODEL_IN_DB": None,
        },
        cwd=litellm_dir,
        timeout=120,
    )


def process_tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def rss_bytes(pid: int) -> int:
    total = 0
    for process in process_tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


# ---------------------------------------------------------------- load


def wrk_script(work_dir: Path, path: Endpoint) -> Path:
    """Write the wrk Lua script that sends the constant chat request on ``path``."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(CONST_BODY)}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    for name, value in path.headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    script = work_dir / f"wrk-{re.sub(r'[^A-Za-z0-9_.-]', '_', path.name)}.lua"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return script


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(script: Path, url: str, connections: int, seconds: float, pid: int) -> dict:
    """Run wrk once and return latency percentiles, requests/s and CPU per request."""
    cpu_before = cpu_seconds(pid)
    output = subprocess.run(
        [
            "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "10s",
            "--latency", "-s", str(script), url,
        ],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout
    cpu_used = cpu_seconds(pid) - cpu_before

    percentiles = {
        f"p{int(float(share))}": _seconds(value)
        for share, value in re.findall(r"^\s+([0-9.]+)%\s+(\S+)$", output, re.MULTILINE)
    }
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = sum(
        int(number)
        for number in re.findall(
            r"(?:Non-2xx or 3xx responses|connect|read|write|timeout):? (\d+)", output
        )
    )
    return {
        "connections": connections,
        "latency": percentiles,
        "requests": requests,
        "errors": errors,
        "requests_per_second": float(re.search(r"Requests/sec:\s+([0-9.]+)", output).group(1)),
        "cpu_ms_per_request": cpu_used / requests * 1000 if requests else None,
    }


def run_stream_client(job: dict, timeout: float = 600) -> dict:
    output = subprocess.run(
        [PYTHON, "-m", "benchmarks.stream_client", json.dumps(job)],
        capture_output=True, text=True, check=True, cwd=REPOSITORY, timeout=timeout,
    ).stdout
    return json.loads(output)


def stream_job(path: Endpoint, model: str, count: int, chunks: int, mode: str) -> dict:
    return {
        "mode": mode,
        "model": model,
        "count": count,
        "chunks": chunks,
        "url": path.chat_url(),
        "headers": {
            **path.headers,
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        },
    }


class RSSSampler(threading.Thread):
    """Sample the RSS of a process tree every 0.1 s and keep the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


# ---------------------------------------------------------------- phases


def measure_round(paths: list[Endpoint], profile: Profile, work_dir: Path) -> None:
    """Run one round of every measurement on every path, path after path."""
    for connections in profile.concurrencies:
        for path in paths:
            result = run_wrk(
                wrk_script(work_dir, path), path.chat_url(), connections,
                profile.wrk_seconds, path.process.pid,
            )
            path.results.setdefault(f"wrk_c{connections}", []).append(result)
            print(
                f"  {path.name:<24} c{connections:<3} {result['requests_per_second']:8.0f}"
                f" req/s  p50 {result['latency'].get('p50', 0) * 1000:7.2f} ms"
                f"  errors {result['errors']}",
                flush=True,
            )
    for path in paths:
        gap = run_stream_client(
            stream_job(path, "gap", profile.gap_streams, profile.gap_chunks, "sequential")
        )
        fast = run_stream_client(
            stream_job(path, "fast", profile.fast_streams, profile.fast_chunks, "sequential")
        )
        path.results.setdefault("gap_streams", []).extend(gap["streams"])
        path.results.setdefault("fast_streams", []).extend(
            {key: value for key, value in stream.items() if key != "delays"}
            for stream in fast["streams"]
        )
        print(f"  {path.name:<24} streams done", flush=True)


def measure_concurrent_streams(path: Endpoint, profile: Profile) -> dict:
    """Hold ``concurrent_streams`` streams open at once on ``path``."""
    pid = path.process.pid
    job = stream_job(
        path, "gap", profile.concurrent_streams, profile.concurrent_chunks, "concurrent"
    )
    if path.status_url:
        job.update(
            status_url=path.status_url,
            status_headers=path.headers,
            status_interval=0.02,
        )
        idle = run_stream_client(dict(job, count=0, idle_seconds=2))
    rss_before = rss_bytes(pid)
    sampler = RSSSampler(pid)
    sampler.start()
    result = run_stream_client(job)
    peak = sampler.stop()
    time.sleep(1)
    result.update(rss_before=rss_before, rss_peak=peak, rss_after=rss_bytes(pid))
    if path.status_url:
        # Polled for 2 s before the streams started, as the baseline.
        result["status_latencies_idle"] = idle["status_latencies"]
    return result


# ---------------------------------------------------------------- summary


def percentile(values: list[float], share: float) -> float | None:
    """Return the nearest-rank percentile ``share`` (0 to 100) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(share / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def median_of(rounds: list[dict], *keys: str) -> float | None:
    values = []
    for result in rounds:
        value = result
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def summarize(path: Endpoint, profile: Profile) -> dict:
    """Reduce the raw results of one path to the figures of the report."""
    results = path.results
    summary: dict = {}
    for connections in profile.concurrencies:
        rounds = results[f"wrk_c{connections}"]
        summary[f"c{connections}"] = {
            "requests_per_second": median_of(rounds, "requests_per_second"),
            "p50_ms": _ms(median_of(rounds, "latency", "p50")),
            "p99_ms": _ms(median_of(rounds, "latency", "p99")),
            "cpu_ms_per_request": median_of(rounds, "cpu_ms_per_request"),
            "errors": sum(result["errors"] for result in rounds),
        }

    gap = results["gap_streams"]
    delays = [delay for stream in gap for delay in stream.get("delays", [])[1:]]
    summary["gap_streams"] = {
        "intact": sum(1 for stream in gap if stream["intact"]),
        "count": len(gap),
        "first_chunk_ms": _ms(statistics.median(s["first_chunk"] for s in gap if s.get("first_chunk"))),
        "chunk_delay_p50_ms": _ms(percentile(delays, 50)),
        "chunk_delay_p99_ms": _ms(percentile(delays, 99)),
    }
    fast = results["fast_streams"]
    summary["fast_streams"] = {
        "intact": sum(1 for stream in fast if stream["intact"]),
        "count": len(fast),
        "duration_ms": _ms(statistics.median(stream["duration"] for stream in fast)),
        "chunks": profile.fast_chunks,
    }
    concurrent = results.get("concurrent")
    if concurrent:
        summary["concurrent"] = {
            "streams": profile.concurrent_streams,
            "intact": concurrent["intact"],
            "errors": concurrent["errors"],
            "elapsed_s": concurrent["elapsed"],
            "rss_before_mb": concurrent["rss_before"] / 2**20,
            "rss_peak_mb": concurrent["rss_peak"] / 2**20,
            "rss_after_mb": concurrent["rss_after"] / 2**20,
            "rss_growth_mb": (concurrent["rss_after"] - concurrent["rss_before"]) / 2**20,
            "status_p50_ms": _ms(percentile(concurrent["status_latencies"], 50)),
            "status_p99_ms": _ms(percentile(concurrent["status_latencies"], 99)),
            "status_samples": len(concurrent["status_latencies"]),
            "status_idle_p99_ms": _ms(
                percentile(concurrent.get("status_latencies_idle", []), 99)
            ),
        }
    return summary


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_tables(summaries: dict[str, dict], profile: Profile) -> str:
    """Return the result tables, with every figure added over ``direct``."""
    direct = summaries["direct"]
    lines = [
        "| path | added p50 c1 (ms) | added p99 c1 (ms) | "
        + " | ".join(f"req/s c{c}" for c in profile.concurrencies)
        + " | CPU per request c16 (ms) |",
        "|---" * (4 + len(profile.concurrencies)) + "|",
    ]
    for name, summary in summaries.items():
        c1 = summary["c1"]
        lines.append(
            f"| {name} | {_fmt(c1['p50_ms'] - direct['c1']['p50_ms'])} "
            f"| {_fmt(c1['p99_ms'] - direct['c1']['p99_ms'])} | "
            + " | ".join(
                f"{summary[f'c{c}']['requests_per_second']:.0f}" for c in profile.concurrencies
            )
            + f" | {_fmt(summary['c16']['cpu_ms_per_request'])} |"
        )

    lines += [
        "",
        "| path | added first chunk (ms) | chunk delay p50 (ms) | added chunk delay p50 (ms) "
        "| chunk delay p99 (ms) | added per chunk at full speed (ms) | intact streams |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, summary in summaries.items():
        gap, fast = summary["gap_streams"], summary["fast_streams"]
        direct_gap, direct_fast = direct["gap_streams"], direct["fast_streams"]
        per_chunk = (fast["duration_ms"] - direct_fast["duration_ms"]) / fast["chunks"]
        lines.append(
            f"| {name} | {_fmt(gap['first_chunk_ms'] - direct_gap['first_chunk_ms'])} "
            f"| {_fmt(gap['chunk_delay_p50_ms'], 3)} "
            f"| {_fmt(gap['chunk_delay_p50_ms'] - direct_gap['chunk_delay_p50_ms'], 3)} "
            f"| {_fmt(gap['chunk_delay_p99_ms'], 3)} | {_fmt(per_chunk, 3)} "
            f"| {gap['intact'] + fast['intact']}/{gap['count'] + fast['count']} |"
        )

    lines += [
        "",
        f"| path | intact of {profile.concurrent_streams} | seconds | RSS before (MB) "
        "| RSS peak (MB) | RSS after (MB) | RSS growth (MB) | api/status p50 (ms) "
        "| api/status p99 (ms) | api/status p99 idle (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, summary in summaries.items():
        concurrent = summary.get("concurrent")
        if not concurrent:
            continue
        lines.append(
            f"| {name} | {concurrent['intact']} | {concurrent['elapsed_s']:.1f} "
            f"| {concurrent['rss_before_mb']:.1f} | {concurrent['rss_peak_mb']:.1f} "
            f"| {concurrent['rss_after_mb']:.1f} | {concurrent['rss_growth_mb']:.1f} "
            f"| {_fmt(concurrent['status_p50_ms'])} | {_fmt(concurrent['status_p99_ms'])} "
            f"| {_fmt(concurrent['status_idle_p99_ms'])} |"
        )
    return "\n".join(lines) + "\n"


def describe_machine() -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in (
        "akko-jupyter-llm", "jupyter_server", "tornado", "aiohttp", "jupyter-server-proxy",
        "litellm", "httpx", "pycurl", "uvloop",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    versions["wrk"] = wrk_version.split()[1] if wrk_version else None
    versions["python"] = platform.python_version()
    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "versions": versions,
    }


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round, about 1 minute")
    parser.add_argument(
        "--output", type=Path, default=REPOSITORY / "benchmarks" / "results.json",
        help="JSON file for the raw and summarized results",
    )
    parser.add_argument(
        "--no-litellm", action="store_true", help="skip LiteLLM (it needs 400 MB and 11 s)"
    )
    parser.add_argument(
        "--compare-with", type=Path, metavar="DIR",
        help="another checkout of this repository, measured as a further path "
        "named after DIR's last part, for example a worktree of the previous commit",
    )
    parser.add_argument(
        "--clients", default="",
        help="comma-separated upstream client variants to add as paths: "
        + ", ".join(CLIENT_VARIANTS),
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed; on Debian: apt-get install -y wrk")
    profile = QUICK if args.quick else FULL
    variants = [name for name in args.clients.split(",") if name]
    unknown = set(variants) - set(CLIENT_VARIANTS)
    if unknown:
        sys.exit(f"unknown client variants {sorted(unknown)}; known: {CLIENT_VARIANTS}")
    if args.compare_with and not (args.compare_with / "akko_jupyter_llm").is_dir():
        sys.exit(
            f"--compare-with {args.compare_with}: no akko_jupyter_llm package in it; "
            "give the root of a checkout, for example from 'git worktree add'"
        )

    started = time.monotonic()
    servers: list[ServerProcess] = []
    with tempfile.TemporaryDirectory(prefix="akko-bench-") as temporary:
        work_dir = Path(temporary)
        try:
            paths = start_paths(
                work_dir, profile, variants, not args.no_litellm, servers, args.compare_with
            )
            print(f"servers ready after {time.monotonic() - started:.0f} s", flush=True)
            for path in paths:  # Warm-up: connections, imports, caches.
                run_wrk(wrk_script(work_dir, path), path.chat_url(), 16, 1, path.process.pid)
            for number in range(1, profile.rounds + 1):
                print(f"round {number} of {profile.rounds}", flush=True)
                measure_round(paths, profile, work_dir)
            for path in paths:
                path.results["concurrent"] = measure_concurrent_streams(path, profile)
                print(f"  {path.name:<24} {profile.concurrent_streams} streams done", flush=True)
        finally:
            for server in servers:
                server.stop()

    summaries = {path.name: summarize(path, profile) for path in paths}
    report = {
        "command": " ".join([Path(PYTHON).name, "-m", "benchmarks.run", *sys.argv[1:]]),
        "profile": profile.__dict__,
        "machine": describe_machine(),
        "seconds": round(time.monotonic() - started),
        "summary": summaries,
        "raw": {path.name: path.results for path in paths},
    }
    args.output.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(markdown_tables(summaries, profile))
    print(f"results in {args.output}, {report['seconds']} s in all")


def start_paths(
    work_dir: Path,
    profile: Profile,
    variants: list[str],
    with_litellm: bool,
    servers: list[ServerProcess],
    compare_with: Path | None = None,
) -> list[Endpoint]:
    """Start every server and return the paths in the order they are measured."""
    upstream = start_upstream(work_dir, profile.gap_ms)
    servers.append(upstream)
    upstream_url = f"{upstream.url}/v1"
    token = secrets.token_hex(16)
    token_header = {"Authorization": f"token {token}"}
    paths = [Endpoint("direct", upstream_url.removesuffix("/v1"), {}, upstream)]

    akko = start_jupyter(
        "akko", work_dir, token, upstream_url,
        {"akko_jupyter_llm": True, "jupyter_server_proxy": False},
    )
    servers.append(akko)
    paths.append(
        Endpoint("akko", f"{akko.url}/akko-llm", token_header, akko, f"{akko.url}/api/status")
    )
    if compare_with is not None:
        other = start_jupyter(
            "akko-compared", work_dir, token, upstream_url,
            {"akko_jupyter_llm": True, "jupyter_server_proxy": False},
            package_dir=compare_with.resolve(),
        )
        servers.append(other)
        paths.append(
            Endpoint(
                f"akko ({compare_with.name})", f"{other.url}/akko-llm", token_header, other,
                f"{other.url}/api/status",
            )
        )
    for variant in variants:
        server = start_jupyter(
            f"akko-{variant}", work_dir, token, upstream_url,
            {
                "akko_jupyter_llm": True,
                "jupyter_server_proxy": False,
                "benchmarks.client_variants": True,
            },
            client_variant=variant,
        )
        servers.append(server)
        paths.append(
            Endpoint(
                f"akko ({variant})", f"{server.url}/akko-llm", token_header, server,
                f"{server.url}/api/status",
            )
        )

    proxy = start_jupyter(
        "jupyter-server-proxy", work_dir, token, upstream_url,
        {"akko_jupyter_llm": False, "jupyter_server_proxy": True},
    )
    servers.append(proxy)
    paths.append(
        Endpoint(
            "jupyter-server-proxy", f"{proxy.url}/proxy/{upstream.port}", token_header,
            proxy, f"{proxy.url}/api/status",
        )
    )
    if with_litellm:
        master_key = "sk-bench-" + secrets.token_hex(16)
        litellm = start_litellm(work_dir, upstream_url, master_key)
        servers.append(litellm)
        paths.append(
            Endpoint("litellm", litellm.url, {"Authorization": f"Bearer {master_key}"}, litellm)
        )
    return paths


if __name__ == "__main__":
    main()
