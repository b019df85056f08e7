"""Run a test server as a subprocess on a free port of 127.0.0.1.

``start_server`` picks a free port, starts the command with its output in a log file and
waits until a readiness URL returns a 2xx status. While waiting it checks that the child is
still alive, and if the child exits it raises ``ServerStartError`` with the tail of the log.
``ServerProcess.stop`` signals the child's own process group, so that processes the server
started itself stop with it. The child runs in a new session, which makes the group id the
child's PID. The signals are SIGTERM first and SIGKILL after a timeout.
Servers still running when the interpreter exits are stopped by an ``atexit`` handler.

A test process killed with SIGKILL runs no ``atexit`` handler, and the new session keeps
the terminal's Ctrl-C from reaching the servers. On Linux each child therefore requests
SIGTERM from the kernel for when its parent dies (``prctl(PR_SET_PDEATHSIG)``). That signal
reaches the server process only: the processes it started stop only if the server stops them.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOG_TAIL_LINES = 40

# Readiness checks must reach the child directly, never through a proxy from the environment.
_DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_running_servers: set[ServerProcess] = set()

# The prctl(2) option that sets the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """Return the C library's prctl, or None where there is none (outside Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


class ServerStartError(RuntimeError):
    """A test server exited or did not become ready in time."""


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    NOTE: another program can take the port between this call and the child's bind.
    ``start_server`` retries with a new port when the child reports that the address is
    in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def read_log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, or a note if it cannot be read."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(log {log_path} could not be read: {error})"
    return "\n".join(text.splitlines()[-lines:])


def _parent_death_signal() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child get SIGTERM when this process dies.

    Returns None outside Linux and outside the main thread. The kernel sends the signal
    when the thread that forked the child exits, not when the whole process does. Only the
    main thread lives as long as the test process, so a server started from another thread
    would be stopped when that thread ends.
    """
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent_pid = os.getpid()
    # prctl is variadic and reads unsigned longs. The arguments are built here, so that
    # the child does little more than two system calls between fork and exec.
    # NOTE: the subprocess documentation calls preexec_fn unsafe when the parent has
    # threads, because the child may wait for a lock that another thread held at the fork.
    unused = ctypes.c_ulong(0)
    arguments = (
        ctypes.c_int(_PR_SET_PDEATHSIG),
        ctypes.c_ulong(signal.SIGTERM),
        unused,
        unused,
        unused,
    )

    def set_parent_death_signal() -> None:
        _prctl(*arguments)
        # A parent that died before prctl ran sends no signal, so the child stops here.
        if os.getppid() != parent_pid:
            os._exit(1)

    return set_parent_death_signal


class ServerProcess:
    """A server subprocess that listens on ``HOST:port`` and writes to ``log_path``."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], port: int, log_path: Path):
        self.name = name
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        """Root URL of the server, without a trailing slash."""
        return f"http://{HOST}:{self.port}"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return read_log_tail(self.log_path, lines)

    def wait_until_ready(self, ready_url: str, timeout: float) -> None:
        """Poll ``ready_url`` until it returns a 2xx status.

        Raises ServerStartError, with the tail of the log, if the child exits first or
        ``timeout`` seconds pass.
        """
        deadline = time.monotonic() + timeout
        last_problem = "no response yet"
        while True:
            exit_code = self.process.poll()
            if exit_code is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {exit_code} before {ready_url} was ready. "
                    f"Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with _DIRECT_OPENER.open(ready_url, timeout=2.0) as response:
                    if 200 <= response.status < 300:
                        return
                    last_problem = f"status {response.status}"
            except urllib.error.HTTPError as error:
                last_problem = f"status {error.code}"
            except (urllib.error.URLError, OSError) as error:
                last_problem = str(getattr(error, "reason", error))
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} was not ready at {ready_url} after {timeout:.0f} s "
                    f"(last check: {last_problem}). Last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child's process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        _running_servers.discard(self)
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s (pid %d) did not exit %.0f s after SIGTERM, sending SIGKILL",
                    self.name,
                    self.pid,
                    timeout,
                )
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=timeout)
        logger.info("%s (pid %d) stopped with code %s", self.name, self.pid, self.process.returncode)

    def _signal_group(self, signal_number: int) -> None:
        # The group id is the child's PID, and it is signalled only while the child has
        # not been reaped, so the id cannot belong to an unrelated process yet.
        try:
            os.killpg(self.pid, signal_number)
        except ProcessLookupError:
            pass

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ServerProcess {self.name} pid={self.pid} url={self.url}>"


def start_server(
    name: str,
    command: Callable[[int], Sequence[str]],
    ready_path: str,
    log_path: Path,
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
    port_attempts: int = 3,
) -> ServerProcess:
    """Start a server on a free port and return it once ``ready_path`` returns a 2xx status.

    ``command`` receives the port and returns the argument list. ``env`` is added to this
    process's environment, where a value of None removes the variable, and ``NO_PROXY`` always covers 127.0.0.1 so the child's own
    loopback requests bypass any configured proxy. The log file is overwritten. If the
    child exits because its port was taken, a new port is tried, ``port_attempts`` times
    in total.
    """
    child_env = dict(os.environ)
    # Python children write their log lines as they happen, so the log tail is current.
    child_env["PYTHONUNBUFFERED"] = "1"
    for variable, value in (env or {}).items():
        if value is None:
            child_env.pop(variable, None)
        else:
            child_env[variable] = value
    for variable in ("NO_PROXY", "no_proxy"):
        existing = child_env.get(variable, "")
        child_env[variable] = ",".join(filter(None, [existing, HOST, "localhost"]))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    preexec_fn = _parent_death_signal()
    if preexec_fn is None and _prctl is not None:
        logger.warning(
            "%s was started outside the main thread, so it keeps running if this process "
            "is killed before it stops the server",
            name,
        )

    for attempt in range(1, port_attempts + 1):
        port = find_free_port()
        arguments = list(command(port))
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=preexec_fn,
            )
        server = ServerProcess(name, process, port, log_path)
        _running_servers.add(server)
        logger.info("started %s (pid %d) on port %d, log %s", name, server.pid, port, log_path)
        try:
            server.wait_until_ready(server.url + ready_path, timeout)
        except ServerStartError:
            server.stop()
            port_taken = "address already in use" in server.log_tail().lower()
            if port_taken and attempt < port_attempts:
                logger.warning("%s could not bind port %d, retrying with another port", name, port)
                continue
            raise
        return server
    raise AssertionError("unreachable: the last attempt returns or raises")


@atexit.register
def _stop_running_servers() -> None:
    for server in list(_running_servers):
        server.stop(timeout=5.0)
