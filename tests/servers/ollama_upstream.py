"""The Ollama-native test upstream (tests/upstreams/ollama.py) as a subprocess.

It runs as a separate process, not inside the test's event loop, so that a session-wide
LiteLLM proxy and synchronous tests can both reach it.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .process import ServerProcess, start_server

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

# Requests to the upstream must reach it directly, never through a proxy from the environment.
_DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class OllamaUpstream:
    """A running Ollama-native test upstream. ``base_url`` is the Ollama root URL, without /v1."""

    process: ServerProcess

    @property
    def base_url(self) -> str:
        return self.process.url

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def recorded_requests(self) -> list[dict[str, Any]]:
        """Return the requests that the upstream recorded since the last ``clear_requests``.

        Each record has ``method``, ``path``, ``query``, ``headers`` and ``body`` (the
        parsed JSON, the text, or None when the body was empty).
        """
        with _DIRECT_OPENER.open(f"{self.base_url}/_test/requests", timeout=10) as response:
            return json.load(response)["requests"]

    def clear_requests(self) -> None:
        request = urllib.request.Request(f"{self.base_url}/_test/requests", method="DELETE")
        with _DIRECT_OPENER.open(request, timeout=10):
            pass

    def stop(self) -> None:
        self.process.stop()


def start_ollama_upstream(work_dir: Path, timeout: float = 30.0) -> OllamaUpstream:
    """Start the Ollama-native test upstream and return it once ``/api/version`` responds.

    The log ``ollama-upstream.log`` is written to ``work_dir``. The readiness checks are
    cleared from the recorded requests before the upstream is returned.
    """
    process = start_server(
        "Ollama test upstream",
        lambda port: [sys.executable, "-m", "tests.upstreams.ollama", "--port", str(port)],
        "/api/version",
        work_dir / "ollama-upstream.log",
        cwd=REPOSITORY_ROOT,
        timeout=timeout,
    )
    upstream = OllamaUpstream(process=process)
    upstream.clear_requests()
    return upstream
