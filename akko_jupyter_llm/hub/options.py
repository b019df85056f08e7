"""The arguments of `configure_spawner`, checked when the Hub loads its configuration.

- `ModelChoice`: the models one user gets (defaults, and the models a per-user
  gateway key may call).
- `UserKeys`: the settings of per-user gateway keys (limits, delivery, what to do
  when the gateway fails at spawn).
- `HubConfigError`: raised for a bad argument, with a message that names it.

Only the standard library is imported here, so ``jupyterhub_config.py`` can use
this module in a Hub image without jupyter_server or jupyter-ai.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

# Keys of a group or profile override, mapped to the `ModelChoice` field they set.
OVERRIDE_KEYS = (
    "chat_model",
    "embeddings_model",
    "completions_model",
    "allowed_models",
)

# LiteLLM durations: a number and a unit of seconds, minutes, hours, days or months
# ("30s", "30m", "1h", "7d", "1mo"), as LiteLLM's key API documents them.
_DURATION = re.compile(r"^[1-9][0-9]*(s|m|h|d|mo)$")

ON_GATEWAY_ERROR_CHOICES = ("fail", "fallback")
KEY_DELIVERY_CHOICES = ("environment", "file")


class HubConfigError(ValueError):
    """A bad argument to `configure_spawner`; the message names the argument."""


@dataclass(frozen=True)
class ModelChoice:
    """The gateway model ids one user's server gets.

    ``allowed_models`` are the models a per-user gateway key may call. Empty
    means the three defaults.
    """

    chat_model: str
    embeddings_model: str
    completions_model: str
    allowed_models: tuple[str, ...] = ()

    def models_for_key(self) -> list[str]:
        """Return the models a per-user key may call, without repeats, in order."""
        models = self.allowed_models or (
            self.chat_model,
            self.embeddings_model,
            self.completions_model,
        )
        return list(dict.fromkeys(models))

    def with_override(self, override: Mapping[str, object]) -> ModelChoice:
        """Return a copy with the fields that ``override`` sets."""
        changes = dict(override)
        if "allowed_models" in changes:
            changes["allowed_models"] = tuple(changes["allowed_models"])
        return replace(self, **changes)


def check_model_id(argument: str, value: object) -> str:
    """Return ``value`` as a model id, or raise `HubConfigError` naming ``argument``."""
    if not isinstance(value, str) or not value.strip():
        raise HubConfigError(
            f"{argument} must be a gateway model id such as 'qwen2.5:3b', "
            f"not {value!r}."
        )
    if value != value.strip() or any(character.isspace() for character in value):
        raise HubConfigError(
            f"{argument}={value!r} contains white space; gateway model ids such as "
            "'qwen2.5-coder:7b' have none."
        )
    return value


def check_model_list(argument: str, value: object) -> tuple[str, ...]:
    """Return a non-empty list of model ids as a tuple, or raise `HubConfigError`."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise HubConfigError(
            f"{argument} must be a non-empty list of gateway model ids, such as "
            f"['qwen2.5:3b', 'nomic-embed-text'], not {value!r}."
        )
    return tuple(
        check_model_id(f"{argument}[{index}]", model_id)
        for index, model_id in enumerate(value)
    )


def check_overrides(argument: str, value: object) -> dict[str, dict[str, object]]:
    """Check a ``groups`` or ``profiles`` mapping; return it with checked values."""
    if not isinstance(value, Mapping):
        raise HubConfigError(
            f"{argument} must be a dict from a name to model settings, such as "
            "{'data-engineering': {'chat_model': 'qwen2.5-coder:7b'}}, "
            f"not {value!r}."
        )
    checked = {}
    for name, override in value.items():
        where = f"{argument}[{name!r}]"
        if not isinstance(name, str) or not name:
            raise HubConfigError(
                f"{argument} has the key {name!r}; keys must be names."
            )
        if not isinstance(override, Mapping):
            raise HubConfigError(
                f"{where} must be a dict with some of {', '.join(OVERRIDE_KEYS)}, "
                f"not {override!r}."
            )
        unknown = sorted(set(override) - set(OVERRIDE_KEYS))
        if unknown:
            raise HubConfigError(
                f"{where} has the unknown key(s) {', '.join(map(repr, unknown))}; "
                f"the keys are {', '.join(OVERRIDE_KEYS)}."
            )
        checked_override: dict[str, object] = {}
        for key, model in override.items():
            if key == "allowed_models":
                checked_override[key] = check_model_list(f"{where}[{key!r}]", model)
            else:
                checked_override[key] = check_model_id(f"{where}[{key!r}]", model)
        checked[name] = checked_override
    return checked


def check_url(argument: str, value: object) -> str:
    """Return an http(s) URL without credentials or trailing slash, or raise."""
    example = "http://akko-akko-litellm:4000/v1"
    if not isinstance(value, str) or not value.strip():
        raise HubConfigError(
            f"{argument} must be a URL such as {example}, not {value!r}."
        )
    url = value.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise HubConfigError(
            f"{argument}={value!r} is not a valid URL ({error})."
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HubConfigError(
            f"{argument}={value!r} must be an http:// or https:// URL with a host "
            f"name, such as {example}."
        )
    if parts.username is not None or parts.password is not None:
        raise HubConfigError(
            f"{argument} must not contain a user name or password; the gateway key "
            "is passed separately."
        )
    return url


def _check_positive(argument: str, value: object, kind: type) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(
        value, (int, float) if kind is float else int
    ):
        kind_name = "a number" if kind is float else "an integer"
        raise HubConfigError(f"{argument} must be {kind_name} or None, not {value!r}.")
    if value <= 0:
        raise HubConfigError(
            f"{argument} must be more than 0 (None means no limit), not {value!r}."
        )


def _check_duration(argument: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _DURATION.match(value):
        raise HubConfigError(
            f"{argument} must be a LiteLLM duration such as '30m', '1h', '7d' or "
            f"'1mo' (None means none), not {value!r}."
        )


@dataclass(frozen=True)
class UserKeys:
    """Settings of per-user LiteLLM virtual keys, minted by the Hub at each spawn.

    Money is in the gateway's currency units (USD in LiteLLM), limits are per
    minute, durations are LiteLLM durations ("30m", "1h", "7d", "1mo"), and
    None means no limit.
    """

    # Root URL of the gateway's key API; empty means upstream_url without "/v1".
    gateway_url: str = ""
    max_budget: float | None = None
    budget_duration: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    # How long a key stays valid; None means until it is revoked.
    key_duration: str | None = None
    # Seconds to wait for each call to the key API (connect and answer).
    request_timeout: float = 10.0
    # "fail": the spawn fails with the reason. "fallback": the server starts with
    # the shared credential (api_key_file or the shared master key), and the Hub
    # logs a warning.
    on_gateway_error: str = "fail"
    # "environment": AKKO_LLM_API_KEY. "file": the Hub writes the key to key_file
    # and sets AKKO_LLM_API_KEY_FILE, for spawners whose servers share the Hub's
    # file system.
    delivery: str = "environment"
    # Path for delivery="file"; "{username}" is replaced by the Hub user name.
    key_file: str = ""
    # Delete the user's key when the server stops.
    revoke_on_stop: bool = False
    # Gateway key alias: this prefix and the Hub user name.
    alias_prefix: str = "jupyterhub-"
    # Extra metadata stored on each key, besides the Hub user name.
    metadata: Mapping[str, str] = field(default_factory=dict)

    def checked(self, upstream_url: str) -> UserKeys:
        """Return a checked copy with ``gateway_url`` filled in, or raise."""
        gateway_url = self.gateway_url
        if gateway_url:
            gateway_url = check_url("UserKeys.gateway_url", gateway_url)
        else:
            gateway_url = upstream_url.removesuffix("/v1")
        _check_positive("UserKeys.max_budget", self.max_budget, float)
        _check_duration("UserKeys.budget_duration", self.budget_duration)
        if self.budget_duration is not None and self.max_budget is None:
            raise HubConfigError(
                f"UserKeys.budget_duration={self.budget_duration!r} needs "
                "UserKeys.max_budget: the budget period resets a budget."
            )
        _check_positive("UserKeys.rpm_limit", self.rpm_limit, int)
        _check_positive("UserKeys.tpm_limit", self.tpm_limit, int)
        _check_positive(
            "UserKeys.max_parallel_requests", self.max_parallel_requests, int
        )
        _check_duration("UserKeys.key_duration", self.key_duration)
        _check_positive("UserKeys.request_timeout", self.request_timeout, float)
        if self.on_gateway_error not in ON_GATEWAY_ERROR_CHOICES:
            raise HubConfigError(
                f"UserKeys.on_gateway_error must be 'fail' or 'fallback', "
                f"not {self.on_gateway_error!r}."
            )
        if self.delivery not in KEY_DELIVERY_CHOICES:
            raise HubConfigError(
                f"UserKeys.delivery must be 'environment' or 'file', "
                f"not {self.delivery!r}."
            )
        if self.delivery == "file" and "{username}" not in self.key_file:
            raise HubConfigError(
                "UserKeys.delivery='file' needs UserKeys.key_file, a path that "
                "contains {username}, such as '/srv/akko-llm-keys/{username}/api-key', "
                f"not {self.key_file!r}."
            )
        if not isinstance(self.alias_prefix, str) or not self.alias_prefix:
            raise HubConfigError(
                "UserKeys.alias_prefix must be a non-empty string, "
                f"not {self.alias_prefix!r}."
            )
        if not isinstance(self.metadata, Mapping) or "jupyterhub_user" in self.metadata:
            raise HubConfigError(
                "UserKeys.metadata must be a dict without the key 'jupyterhub_user', "
                f"which the Hub sets itself; got {self.metadata!r}."
            )
        return replace(self, gateway_url=gateway_url, metadata=dict(self.metadata))
