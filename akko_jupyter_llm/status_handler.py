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
``endpoint``, this server's OpenAI-compatible URL, and ``cached``. Errors are
JSON in jupyter_server's shape, ``{"message", "reason"}``, which JupyterLab's
status item shows. A request without valid credentials gets HTTP 403 with the
reason ``not_authenticated``, a cookie-authenticated POST without the XSRF
token gets ``xsrf_failed``, and a Host header the server does not accept gets
``host_not_allowed``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .diagnostics import OK, GatewayDiagnostics, Report
from .errors import host_not_allowed_message

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

    def write_error(self, status_code: int, **kwargs) -> None:
        """Write a 403 with what to do, and other errors as jupyter_server does."""
        exc_info = kwargs.get("exc_info")
        rejection = self._rejection(status_code, exc_info[1] if exc_info else None)
        if rejection is None:
            super().write_error(status_code, **kwargs)
            return
        reason, message = rejection
        self.log.warning(
            "akko-llm status: %s %s rejected with 403 %s",
            self.request.method,
            self.request.path,
            reason,
        )
        self.finish({"message": message, "reason": reason})

    def _rejection(
        self, status_code: int, error: BaseException | None
    ) -> tuple[str, str] | None:
        """Return the reason and message of a 403 this handler explains, or None.

        Other errors keep jupyter_server's response. The messages end without a
        period, because JupyterLab's status item shows them followed by ". " and
        advice of its own.
        """
        if status_code != 403:
            return None
        if not self.check_host():
            # jupyter_server rejects a Host header it does not know before it
            # authenticates, to stop DNS rebinding.
            return ("host_not_allowed", host_not_allowed_message(self.request.host))
        detail = getattr(error, "log_message", None) or ""
        xsrf_failed = "xsrf" in detail.lower()
        no_user = not getattr(self, "_jupyter_current_user", None)
        # A POST without credentials fails the XSRF check first, but the missing
        # credentials are what the client must fix.
        if no_user and (not detail or xsrf_failed):
            return (
                "not_authenticated",
                "Not authenticated: the request has no valid token or session "
                "cookie for this Jupyter server. Send a token in an "
                "'Authorization: token <token>' header (under JupyterHub, a token "
                "of a user allowed on this server), or log in again in the browser",
            )
        if xsrf_failed:
            return (
                "xsrf_failed",
                f"The XSRF check failed ({detail}). A POST authenticated by the "
                "session cookie must also send the X-XSRFToken header, as "
                "JupyterLab's ServerConnection does. Scripts should send "
                "'Authorization: token <token>' instead",
            )
        return None

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
