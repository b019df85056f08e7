"""The endpoint ``{base_url}akko-llm/status``: gateway diagnostics as JSON.

- ``GET`` runs the checks of `diagnostics.GatewayDiagnostics` (without the live
  test) and returns the report. Reports are cached for `CACHE_SECONDS`, and
  requests that arrive while a run is under way wait for that run, so many
  open tabs cost the gateway one set of requests.
- ``POST`` also runs the live test, one streamed completion. It is a POST so
  that Jupyter's XSRF check keeps other web pages from starting it with the
  user's cookie. Each user runs one live test at a time; a second one gets
  HTTP 429 until the first is done.

Both respond with the report (see `diagnostics.Report.as_dict`) plus
``endpoint``, this server's OpenAI-compatible URL, and ``cached``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .diagnostics import OK, GatewayDiagnostics, Report

# Seconds a report is reused before the gateway is asked again.
CACHE_SECONDS = 5.0
# Seconds in the Retry-After header when its live test is already running.
LIVE_RETRY_AFTER_SECONDS = 5


class LiveTestRunning(Exception):
    """The user already has a live test in progress."""


class StatusService:
    """The diagnostics of one Jupyter server, with the cache and the live-test locks."""

    def __init__(self, diagnostics: GatewayDiagnostics, log: logging.Logger) -> None:
        self.diagnostics = diagnostics
        self.log = log
        self._cached: Report | None = None
        self._cached_at = float("-inf")
        self._running: asyncio.Future[Report] | None = None
        self._live_users: set[str] = set()
        self._last_logged: tuple | None = None

    async def report(self) -> tuple[Report, bool]:
        """Return the checks without the live test, and whether they were reused."""
        age = time.monotonic() - self._cached_at
        if self._cached is not None and age < CACHE_SECONDS:
            return self._cached, True
        reused = self._running is not None
        if self._running is None:
            self._running = asyncio.ensure_future(self._run_and_store())
        # asyncio.shield: a client that goes away must not cancel the run that
        # other requests wait for.
        return await asyncio.shield(self._running), reused

    async def _run_and_store(self) -> Report:
        try:
            report = await self.diagnostics.run(live=False)
        finally:
            self._running = None
        self._store(report)
        return report

    async def live_report(self, user: str) -> Report:
        """Run every check and the live test for ``user``.

        Raises `LiveTestRunning` when ``user`` already has one in progress.
        """
        if user in self._live_users:
            raise LiveTestRunning(user)
        self._live_users.add(user)
        try:
            report = await self.diagnostics.run(live=True)
        finally:
            self._live_users.discard(user)
        self._log_changes(report)
        return report

    def _store(self, report: Report) -> None:
        self._cached = report
        self._cached_at = time.monotonic()
        self._log_changes(report)

    def _log_changes(self, report: Report) -> None:
        """Log the failing checks when they differ from the last report's."""
        failing = tuple(
            (check.name, check.status, check.message)
            for check in report.checks
            if check.status not in (OK, "skipped") and check.name != "live_test"
        )
        if failing == self._last_logged:
            return
        self._last_logged = failing
        if not failing:
            self.log.info("akko-llm status: all gateway checks pass")
            return
        for name, status, message in failing:
            self.log.warning("akko-llm status: %s %s: %s", name, status, message)

    async def close(self) -> None:
        await self.diagnostics.close()


class StatusHandler(ExtensionHandlerMixin, APIHandler):
    """Serve the gateway diagnostics to the authenticated user."""

    @property
    def service(self) -> StatusService:
        return self.extensionapp.status_service

    def _endpoint(self) -> str:
        origin = f"{self.request.protocol}://{self.request.host}"
        return f"{origin}{self.base_url}akko-llm/v1"

    def _user_key(self) -> str:
        """Return whose live test this is: the Hub user, or the single local user."""
        if type(self.identity_provider).__module__.startswith("jupyterhub"):
            user = self.current_user
            return getattr(user, "username", None) or str(user)
        # A standalone server has one user, but gives each token request a new name.
        return "server-owner"

    def _send(self, report: Report, cached: bool) -> None:
        document = report.as_dict()
        document["endpoint"] = self._endpoint()
        document["cached"] = cached
        self.set_header("Cache-Control", "no-store")
        self.finish(document)

    @web.authenticated
    async def get(self) -> None:
        if self.get_argument("live", ""):
            raise web.HTTPError(
                400,
                "The live test runs only on POST akko-llm/status, so that other "
                "web pages cannot start it; GET runs the other checks.",
            )
        report, cached = await self.service.report()
        self._send(report, cached)

    @web.authenticated
    async def post(self) -> None:
        try:
            report = await self.service.live_report(self._user_key())
        except LiveTestRunning:
            # The response is written here, because Tornado's send_error drops
            # the Retry-After header before write_error runs.
            self.log.info(
                "akko-llm status: live test for %s rejected, one is already running",
                self._user_key(),
            )
            self.set_status(429)
            self.set_header("Retry-After", str(LIVE_RETRY_AFTER_SECONDS))
            self.finish(
                {
                    "message": "A live test is already running for this user; "
                    "wait for its result, then retry after "
                    f"{LIVE_RETRY_AFTER_SECONDS} s.",
                    "reason": "live_test_running",
                }
            )
            return
        self._send(report, cached=False)
