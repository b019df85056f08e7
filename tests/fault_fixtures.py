"""Fixtures for the fault, bad-input, soak and secret tests.

- ``faulty_upstream``: the raw TCP upstream of tests/upstreams/faulty.py;
- ``resources``: counts this process's open file descriptors and pending
  asyncio tasks, so a test can check that a failure left nothing behind. The
  Jupyter server, both test upstreams and the test client all run in the
  test's process and event loop, so every socket of a proxied request shows up
  here, on both of its ends.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import pytest

from tests.upstreams.faulty import FaultyUpstream


@pytest.fixture
def faulty_upstream(jp_asyncio_loop):
    server = FaultyUpstream()
    jp_asyncio_loop.run_until_complete(server.start())
    yield server
    jp_asyncio_loop.run_until_complete(server.stop())


def open_file_descriptors() -> list[str]:
    """Return what each open file descriptor of this process points at."""
    descriptors = []
    for name in os.listdir("/proc/self/fd"):
        try:
            descriptors.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            continue  # Closed between listing and reading.
    return descriptors


def pending_tasks() -> list[asyncio.Task]:
    return [task for task in asyncio.all_tasks() if not task.done()]


@dataclass
class ResourceSnapshot:
    file_descriptors: int
    tasks: int


class Resources:
    """Before-and-after counts of file descriptors and asyncio tasks."""

    def __init__(self) -> None:
        self.baseline: ResourceSnapshot | None = None

    @staticmethod
    def snapshot() -> ResourceSnapshot:
        return ResourceSnapshot(len(open_file_descriptors()), len(pending_tasks()))

    def mark(self) -> ResourceSnapshot:
        """Record the counts to compare with in `assert_released`."""
        self.baseline = self.snapshot()
        return self.baseline

    async def assert_released(self, timeout: float = 5.0) -> None:
        """Wait until the counts are back to the baseline, or fail listing the rest.

        Closing a socket or finishing a task takes a few turns of the event
        loop after the response has been read, hence the wait.
        """
        assert self.baseline is not None, "call mark() first"
        deadline = time.monotonic() + timeout
        while True:
            now = self.snapshot()
            if (
                now.file_descriptors <= self.baseline.file_descriptors
                and now.tasks <= self.baseline.tasks
            ):
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        tasks = "\n".join(repr(task.get_coro()) for task in pending_tasks())
        raise AssertionError(
            f"resources left behind after {timeout} s: {now} against {self.baseline}\n"
            f"open: {sorted(open_file_descriptors())}\ntasks:\n{tasks}"
        )


@pytest.fixture
def resources() -> Resources:
    return Resources()
