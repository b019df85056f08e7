"""The HTTP client that talks to the gateway: pooling, timeouts, error translation.

`UpstreamClient` owns one `aiohttp.ClientSession`, so connections to the
gateway stay open and are reused across requests and users. It has three
separate timeouts and no total one, so a stream that keeps sending may run for
as long as it needs:

- ``connect_timeout``: opening the TCP (and TLS) connection;
- ``first_byte_timeout``: from sending the request to receiving the response
  headers, which covers a cold model load on CPU;
- ``idle_timeout``: between two chunks of the response body.

Every network failure leaves as a `ProxyError` whose message names the
upstream URL, what went wrong, and the setting to check. The key is never part
of a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from .config import ProxySettings, setting_name
from .errors import ProxyError

if sys.version_info >= (3, 11):
    from asyncio import timeout as async_timeout
else:  # pragma: no cover - aiohttp depends on async-timeout on Python 3.10
    from async_timeout import timeout as async_timeout


class IdleTimer:
    """Closes a response when a read of it waits longer than ``seconds`` for data.

    One timer serves the whole response. A read only notes when it starts
    waiting, and the timer, when it fires before the time is up, sets itself
    again for the rest. `asyncio.timeout` around each read creates and cancels
    a timer for every chunk, which took about a tenth of the proxy's CPU time
    under 200 streams (benchmarks/profile.py).
    """

    def __init__(self, response: aiohttp.ClientResponse, seconds: float) -> None:
        self._response = response
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def waiting(self) -> None:
        """Note that a read starts waiting for data now."""
        self._waiting_since = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(
                self._waiting_since + self._seconds, self._check
            )

    def received(self) -> None:
        """Note that the read has returned."""
        self._waiting_since = None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._waiting_since is None:
            return  # No read is waiting, so the next one sets the timer again.
        deadline = self._waiting_since + self._seconds
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._check)
            return
        self.expired = True
        # The waiting read then fails with a connection error.
        self._response.close()


class UpstreamClient:
    """A pooled client for the configured upstream (a LiteLLM gateway or Ollama)."""

    def __init__(self, settings: ProxySettings, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return self.settings.upstream_url

    def url_for(self, upstream_path: str, query: str = "") -> URL:
        """Return the upstream URL for an already-encoded route path and query."""
        url = f"{self.base_url}/{upstream_path}"
        if query:
            url += "?" + query
        # encoded=True: the path was checked and encoded by routes.match_route,
        # and yarl must not normalise it again.
        return URL(url, encoded=True)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._tls_setting(),
                limit=0,  # The per-user limit in the handler bounds concurrency.
                ttl_dns_cache=300,
                keepalive_timeout=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.settings.connect_timeout,
                ),
                # Bodies are decoded here, so the client never gets a
                # Content-Encoding that does not match the bytes it receives.
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                # The session is shared by every user of this server, so a
                # cookie set by the gateway must not be sent back for others.
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
        return self._session

    def _tls_setting(self) -> ssl.SSLContext | bool:
        """Return aiohttp's ``ssl`` argument: verification on, off, or with a CA file."""
        if not self.settings.verify_tls:
            return False
        if not self.settings.ca_bundle:
            return True
        try:
            return ssl.create_default_context(cafile=self.settings.ca_bundle)
        except (OSError, ValueError) as error:
            # It loaded when the settings were checked; the file changed since.
            raise ProxyError(
                503,
                f"Cannot load the CA bundle {self.settings.ca_bundle} "
                f"({setting_name('ca_bundle')}): {error}. Ask the platform admin "
                "to check the mounted CA certificate.",
                code="proxy_misconfigured",
            ) from None

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def open(
        self, method: str, url: URL, headers: dict[str, str], body: bytes | None
    ) -> aiohttp.ClientResponse:
        """Send a request and return the response once its headers have arrived.

        The caller must close or release the response.
        """
        session = self._get_session()
        try:
            async with async_timeout(self.settings.first_byte_timeout):
                return await session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    # aiohttp's own compression header is replaced by ours.
                    compress=None,
                )
        except aiohttp.ConnectionTimeoutError as error:
            raise self._timeout_error("connect_timeout", "connecting to") from error
        except asyncio.TimeoutError as error:
            raise self._timeout_error(
                "first_byte_timeout", "waiting for the response from"
            ) from error
        except aiohttp.ClientError as error:
            raise self.translate_error(error, before_response=True) from error
        except ssl.SSLError as error:
            raise self._tls_error(error) from error

    async def iter_body(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Yield the response body in chunks as they arrive.

        Raises `ProxyError` when no chunk arrives within ``idle_timeout`` or the
        connection breaks before the body is complete.
        """
        content = response.content
        timer = IdleTimer(response, self.settings.idle_timeout)
        try:
            while True:
                try:
                    # What has already arrived is taken without waiting.
                    chunk = content.read_nowait()
                    if not chunk and not content.at_eof():
                        timer.waiting()
                        try:
                            chunk = await content.readany()
                        finally:
                            timer.received()
                except aiohttp.ClientError as error:
                    if timer.expired:
                        raise self._idle_timeout_error() from None
                    raise self.translate_error(error, before_response=False) from error
                if not chunk:
                    if timer.expired:
                        raise self._idle_timeout_error()
                    return
                yield chunk
        finally:
            timer.cancel()

    async def read_body(
        self, response: aiohttp.ClientResponse, limit: int | None = None
    ) -> bytes:
        """Read the response body, with the idle timeout between chunks.

        With ``limit``, reading stops once that many bytes have arrived, and
        the body is cut there.
        """
        chunks = []
        size = 0
        async with contextlib.aclosing(self.iter_body(response)) as body:
            async for chunk in body:
                chunks.append(chunk)
                size += len(chunk)
                if limit is not None and size >= limit:
                    break
        return b"".join(chunks)[:limit]

    def _idle_timeout_error(self) -> ProxyError:
        return self._timeout_error(
            "idle_timeout", "waiting for the next part of the response from"
        )

    def _timeout_error(self, trait: str, doing: str) -> ProxyError:
        seconds = getattr(self.settings, trait)
        return ProxyError(
            504,
            f"Timed out after {seconds:g} s {doing} the model gateway at "
            f"{self.base_url}. The limit is {setting_name(trait)}. The gateway or "
            "its model server may be overloaded or still loading the model; "
            "try again, or ask the platform admin to raise the limit.",
            code="upstream_timeout",
        )

    def _tls_error(self, error: BaseException) -> ProxyError:
        if "WRONG_VERSION_NUMBER" in str(error):
            # OpenSSL's error when the other side responds in plain text.
            return ProxyError(
                502,
                f"TLS with the model gateway at {self.base_url} failed: the port "
                "answered without TLS, so it probably serves plain HTTP. Check "
                f"{setting_name('upstream_url')}: use http:// for that port, or "
                "the port where the gateway serves HTTPS.",
                code="upstream_tls_error",
            )
        return ProxyError(
            502,
            f"TLS with the model gateway at {self.base_url} failed: {error}. "
            f"Check {setting_name('upstream_url')}, and that the gateway's "
            "certificate is signed by a CA that this machine trusts or by the one in "
            f"{setting_name('ca_bundle')}.",
            code="upstream_tls_error",
        )

    def translate_error(
        self, error: aiohttp.ClientError, *, before_response: bool
    ) -> ProxyError:
        """Turn an aiohttp failure into a `ProxyError` that names what to check."""
        where = setting_name("upstream_url")
        if isinstance(error, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            return self._tls_error(error)
        if isinstance(error, aiohttp.ClientConnectorDNSError):
            host = error.host
            return ProxyError(
                502,
                f"Cannot resolve the host name {host!r} of the model gateway "
                f"{self.base_url}. Check {where}: in Kubernetes it is the "
                "gateway's Service name, for example http://akko-akko-litellm:4000/v1.",
                code="upstream_unreachable",
            )
        if isinstance(error, aiohttp.ClientConnectorError):
            os_error = error.os_error
            # asyncio replaces strerror with "Connect call failed (address)".
            if os_error.errno:
                reason = os.strerror(os_error.errno)
            else:
                reason = os_error.strerror or str(os_error)
            return ProxyError(
                502,
                f"Cannot connect to the model gateway at {self.base_url}: {reason}. "
                f"Check that the gateway is running and that {where} is right.",
                code="upstream_unreachable",
            )
        if isinstance(error, aiohttp.ClientResponseError):
            # aiohttp's parser rejected the status line or headers (too long,
            # malformed), for example when the URL names a port that does not
            # speak HTTP. Its message quotes the offending bytes after a colon;
            # they may be anything the upstream sent, so only the reason is kept.
            reason = str(error.message).split(":", 1)[0][:200]
            return ProxyError(
                502,
                f"The model gateway at {self.base_url} sent a response that is not "
                f"valid HTTP ({reason}). Check that {where} names the gateway's "
                "HTTP port.",
                code="upstream_invalid_response",
            )
        if before_response:
            return ProxyError(
                502,
                f"The model gateway at {self.base_url} closed the connection "
                f"before answering ({type(error).__name__}). It may have restarted; "
                "try again.",
                code="upstream_disconnected",
            )
        return ProxyError(
            502,
            f"The connection to the model gateway at {self.base_url} broke "
            f"while the response was being received ({type(error).__name__}). "
            "The answer is incomplete; try again.",
            code="upstream_disconnected",
        )
