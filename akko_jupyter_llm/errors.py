"""Errors that the proxy itself returns, in the OpenAI error shape.

`ProxyError` is raised anywhere on the request path and turned into a response by
the handler: a JSON body ``{"error": {"message", "type", "param", "code"}}`` for a
plain response, or one ``data: {"error": ...}`` event when a stream has already
started. The official OpenAI SDKs, LangChain and jupyter-ai all show the
``message`` of this shape to the user.

Errors that the gateway makes are not wrapped: the handler passes them through.
"""

from __future__ import annotations

import json

from tornado.web import HTTPError

# The OpenAI error ``type`` for each HTTP status this package returns.
_ERROR_TYPES = {
    400: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def host_not_allowed_message(host: str) -> str:
    """Return why a request with the Host header ``host`` was rejected, and what to do.

    The text ends without a period, because the status endpoint's messages are
    shown followed by advice of JupyterLab's status item.
    """
    return (
        f"This Jupyter server does not accept the Host header {host[:100]!r}. "
        "Reach it by the address it listens on (for example 127.0.0.1 or "
        "localhost), or ask the admin to add the name to "
        "c.ServerApp.local_hostnames"
    )


class ProxyError(HTTPError):
    """A failure to report to the client with an HTTP status and a readable message.

    ``code`` is a stable machine-readable name (for example
    ``upstream_unreachable``); ``headers`` are added to the response, such as
    ``Retry-After`` on a 429. It is a `tornado.web.HTTPError`, so Tornado sets
    the status when it escapes a handler, and logs nothing: the handler logs it.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}"

    @property
    def error_type(self) -> str:
        if self.status in _ERROR_TYPES:
            return _ERROR_TYPES[self.status]
        return "invalid_request_error" if self.status < 500 else "server_error"

    def to_dict(self) -> dict:
        """Return the OpenAI error object: ``{"error": {...}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": None,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    def to_sse_event(self) -> bytes:
        """Return the error as one server-sent event, for a stream already under way."""
        return b"data: " + self.to_json() + b"\n\n"
