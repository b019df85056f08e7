"""The allow-list of OpenAI routes that the proxy forwards, and nothing else.

The proxy adds the gateway key to every request it forwards. A LiteLLM gateway
answers administrative routes (``/key/generate``, ``/user/new``, ``/model/new``,
``/config/update``, ``/spend/logs`` ...) to that key, so a route that is not on
this list must never reach the upstream, however it is spelled.

`match_route` works on the raw request path, before percent-decoding, so
``chat%2Fcompletions`` or ``models%2F..`` never equal an allowed route by
accident. Only the model id in ``models/{id}`` is decoded, and it is checked
segment by segment before it is encoded again for the upstream URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

# Route (relative to the ``v1`` prefix) -> the one HTTP method it accepts.
FIXED_ROUTES = {
    "models": "GET",
    "chat/completions": "POST",
    "completions": "POST",
    "embeddings": "POST",
}
MODEL_ROUTE_PREFIX = "models/"

# Characters kept as they are when a model id is written into the upstream path.
# Colons and slashes are part of real ids (``qwen2.5-coder:7b``, ``hf.co/org/model``).
_MODEL_ID_SAFE = ":/@+!$&'()*,;=~"

# Maximum length of a model id, in characters; real ids are far shorter.
MAX_MODEL_ID_LENGTH = 512


@dataclass(frozen=True)
class Route:
    """An allowed route: its method and the path to request upstream.

    ``upstream_path`` is already percent-encoded and relative to the upstream
    URL (for example ``models/qwen2.5-coder:7b``).
    """

    method: str
    upstream_path: str
    name: str


class RouteNotAllowed(ValueError):
    """The path or method is not one the proxy forwards; the message explains why."""


def has_control_characters(text: str) -> bool:
    """Return whether ``text`` contains ASCII control characters (CR, LF, NUL, ...)."""
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


def check_model_id(model_id: str) -> None:
    """Raise `RouteNotAllowed` unless ``model_id`` is safe to place in a URL path."""
    if not model_id:
        raise RouteNotAllowed("the model id is empty")
    if len(model_id) > MAX_MODEL_ID_LENGTH:
        raise RouteNotAllowed(
            f"the model id is {len(model_id)} characters long, "
            f"over the maximum of {MAX_MODEL_ID_LENGTH}"
        )
    if has_control_characters(model_id):
        raise RouteNotAllowed("the model id contains control characters")
    if "\\" in model_id:
        raise RouteNotAllowed("the model id contains a backslash")
    for segment in model_id.split("/"):
        if segment in ("", ".", ".."):
            raise RouteNotAllowed(
                "the model id contains an empty, '.' or '..' path segment"
            )


def match_route(method: str, raw_path: str) -> Route:
    """Return the allowed route for ``method`` and ``raw_path``, or raise.

    ``raw_path`` is the part of the request path after ``akko-llm/v1/``, exactly
    as the client sent it (not percent-decoded, no query string).
    """
    if raw_path in FIXED_ROUTES:
        allowed_method = FIXED_ROUTES[raw_path]
        if method != allowed_method:
            raise RouteNotAllowed(
                f"{raw_path} accepts {allowed_method} requests, not {method}"
            )
        return Route(method=method, upstream_path=raw_path, name=raw_path)

    if raw_path.startswith(MODEL_ROUTE_PREFIX):
        if method != "GET":
            raise RouteNotAllowed(f"models/{{id}} accepts GET requests, not {method}")
        try:
            model_id = unquote(raw_path[len(MODEL_ROUTE_PREFIX) :], errors="strict")
        except UnicodeDecodeError as error:
            raise RouteNotAllowed("the model id is not valid UTF-8") from error
        check_model_id(model_id)
        upstream_path = MODEL_ROUTE_PREFIX + quote(model_id, safe=_MODEL_ID_SAFE)
        return Route(method=method, upstream_path=upstream_path, name="models/{id}")

    raise RouteNotAllowed("this route is not forwarded")


def allowed_routes_text() -> str:
    """Return the allowed routes as one line, for error messages."""
    routes = [f"{method} {path}" for path, method in FIXED_ROUTES.items()]
    routes.insert(1, "GET models/{id}")
    return ", ".join(routes)
