"""Checking the `AkkoLLM` settings and reading their environment variables.

A bad setting must not stop the Jupyter server: `check_settings` returns a list
of readable problems instead of raising. The extension logs them at start, and
the proxy returns them in every response until they are fixed.

`ENV_VARS` maps each setting to the environment variable that feeds its default.
"""

from __future__ import annotations

import math
import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from traitlets import Bool, Float, Int, TraitError

from .identity import IDENTITY_MODES

ENV_VARS = {
    "upstream_url": "AKKO_LLM_UPSTREAM_URL",
    "api_key": "AKKO_LLM_API_KEY",
    "api_key_file": "AKKO_LLM_API_KEY_FILE",
    "connect_timeout": "AKKO_LLM_CONNECT_TIMEOUT",
    "first_byte_timeout": "AKKO_LLM_FIRST_BYTE_TIMEOUT",
    "idle_timeout": "AKKO_LLM_IDLE_TIMEOUT",
    "max_body_size": "AKKO_LLM_MAX_BODY_SIZE",
    "max_concurrent_requests": "AKKO_LLM_MAX_CONCURRENT_REQUESTS",
    "user_identity": "AKKO_LLM_USER_IDENTITY",
    "ca_bundle": "AKKO_LLM_CA_BUNDLE",
    "verify_tls": "AKKO_LLM_VERIFY_TLS",
}

# The settings that can contain the gateway key, as messages name them. The
# ``akko-llm`` command replaces this text with the variables and flag it reads.
KEY_SETTINGS = "c.AkkoLLM.api_key or c.AkkoLLM.api_key_file"

# Spellings of a boolean environment variable, lower case.
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class ProxySettings:
    """The checked settings the proxy runs with; times in seconds, sizes in bytes."""

    upstream_url: str
    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float
    max_body_size: int
    max_concurrent_requests: int
    user_identity: str = "auto"
    # PEM file of the CAs trusted for an https upstream; '' means the system's.
    ca_bundle: str = ""
    verify_tls: bool = True


def setting_name(trait: str) -> str:
    """Return how an admin writes a setting, with its environment variable."""
    return f"c.AkkoLLM.{trait} ({ENV_VARS[trait]})"


def env_number(trait: str, fallback: float, cast: type, problems: dict[str, str]):
    """Read the environment variable of ``trait`` as a number.

    An unset or blank variable gives ``fallback``. A value that is not a number
    is recorded in ``problems`` and also gives ``fallback``, so that the bad
    value is reported rather than crashing the server at start.
    """
    name = ENV_VARS[trait]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return fallback
    try:
        return cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        problems[trait] = (
            f"{name}={raw!r} is not {kind}; set it to {kind} "
            f"or unset it to use the default {fallback}"
        )
        return fallback


def env_bool(trait: str, fallback: bool, problems: dict[str, str]) -> bool:
    """Read the environment variable of ``trait`` as a boolean; see `env_number`."""
    name = ENV_VARS[trait]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return fallback
    if raw.lower() in _TRUE_WORDS:
        return True
    if raw.lower() in _FALSE_WORDS:
        return False
    problems[trait] = (
        f"{name}={raw!r} is not a boolean; set it to true or false "
        f"or unset it to use the default {str(fallback).lower()}"
    )
    return fallback


def check_ca_bundle(path: str) -> str | None:
    """Return a problem with the CA bundle file, or None when it loads."""
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ValueError) as error:
        # ssl.SSLError is an OSError; its strerror is None.
        reason = getattr(error, "strerror", None) or str(error)
        return (
            f"{setting_name('ca_bundle')} is {path!r}, which cannot be loaded as "
            f"PEM certificates: {reason}. Mount the CA certificate of the "
            f"gateway at that path, or leave {setting_name('ca_bundle')} empty to "
            "use the system's CAs."
        )
    return None


def redact_url(url: str) -> str:
    """Return ``url`` without any user name or password in it, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc="***@" + netloc).geturl()


def check_upstream_url(url: str) -> str | None:
    """Return a problem with the upstream URL, or None when it is usable."""
    where = setting_name("upstream_url")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"{where} is not a valid URL: {shown!r} ({error})."
    if parts.scheme not in ("http", "https"):
        return (
            f"{where} must start with http:// or https://, not {shown!r}. "
            "Example: http://akko-akko-litellm:4000/v1."
        )
    if not parts.hostname:
        return f"{where} has no host name: {shown!r}."
    if parts.username is not None or parts.password is not None:
        return (
            f"{where} must not contain a user name or password ({shown!r}); "
            f"put the gateway key in {KEY_SETTINGS}."
        )
    if parts.query or parts.fragment:
        return f"{where} must not have a query string or fragment: {shown!r}."
    if port == 0:
        return f"{where} has port 0: {shown!r}."
    return None


def check_settings(app, env_problems: dict[str, str]) -> tuple[ProxySettings, list[str]]:
    """Check the settings of ``app`` (an `AkkoLLM`); return them and their problems.

    Each problem is one sentence that names the setting and the bad value.
    """
    problems = []
    upstream_url = app.upstream_url.strip().rstrip("/")
    url_problem = check_upstream_url(upstream_url)
    if url_problem:
        problems.append(url_problem)

    numbers = {}
    for trait in ("connect_timeout", "first_byte_timeout", "idle_timeout"):
        value = _as_number(getattr(app, trait), float)
        numbers[trait] = value
        if trait in env_problems:
            problems.append(f"{setting_name(trait)}: {env_problems[trait]}.")
        elif value is None or math.isnan(value) or value <= 0:
            problems.append(
                f"{setting_name(trait)} must be a positive number of seconds, "
                f"not {getattr(app, trait)!r}."
            )

    for trait in ("max_body_size", "max_concurrent_requests"):
        value = _as_number(getattr(app, trait), int)
        numbers[trait] = value
        if trait in env_problems:
            problems.append(f"{setting_name(trait)}: {env_problems[trait]}.")
        elif value is None or value < 0:
            problems.append(
                f"{setting_name(trait)} must be an integer, 0 or more (0 means no "
                f"limit), not {getattr(app, trait)!r}."
            )

    user_identity = app.user_identity.strip().lower()
    if user_identity not in IDENTITY_MODES:
        problems.append(
            f"{setting_name('user_identity')} must be one of "
            f"{', '.join(IDENTITY_MODES)}, not {app.user_identity!r}."
        )
        user_identity = "off"

    ca_bundle = app.ca_bundle.strip()
    if ca_bundle:
        bundle_problem = check_ca_bundle(ca_bundle)
        if bundle_problem:
            problems.append(bundle_problem)

    verify_tls = app.verify_tls
    if "verify_tls" in env_problems:
        problems.append(f"{setting_name('verify_tls')}: {env_problems['verify_tls']}.")
    elif not isinstance(verify_tls, bool):
        problems.append(
            f"{setting_name('verify_tls')} must be True or False, not {verify_tls!r}."
        )
        verify_tls = True

    # A setting with a problem keeps a harmless stand-in value: no request is
    # forwarded while there are problems.
    settings = ProxySettings(
        upstream_url=upstream_url,
        connect_timeout=numbers["connect_timeout"] or 1.0,
        first_byte_timeout=numbers["first_byte_timeout"] or 1.0,
        idle_timeout=numbers["idle_timeout"] or 1.0,
        max_body_size=numbers["max_body_size"] or 0,
        max_concurrent_requests=numbers["max_concurrent_requests"] or 0,
        user_identity=user_identity,
        ca_bundle=ca_bundle,
        verify_tls=verify_tls,
    )
    return settings, problems


def _as_number(value, cast: type):
    """Return ``value`` as a number of type ``cast``, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if cast is int and isinstance(value, float) and not value.is_integer():
            return None
        return cast(value)
    try:
        return cast(str(value).strip())
    except ValueError:
        return None


class LenientFloat(Float):
    """A float setting that keeps an invalid value for `check_settings` to report.

    A plain `Float` raises at start on ``c.AkkoLLM.idle_timeout = "two"``, and
    the extension then fails to load: its routes vanish instead of saying what
    is wrong.
    """

    def validate(self, obj, value):
        try:
            return super().validate(obj, value)
        except TraitError:
            return value


class LenientBool(Bool):
    """A boolean setting that keeps an invalid value; see `LenientFloat`."""

    def validate(self, obj, value):
        try:
            return super().validate(obj, value)
        except TraitError:
            return value


class LenientInt(Int):
    """An integer setting that keeps an invalid value; see `LenientFloat`."""

    def validate(self, obj, value):
        try:
            return super().validate(obj, value)
        except TraitError:
            return value
