"""`configure_spawner`: wire every user's server to the gateway from the Hub config.

The call installs a ``pre_spawn_hook`` (and, with ``revoke_on_stop``, a
``post_stop_hook``) on a Spawner configuration section. At each spawn the hook
picks the user's models: profile first, then the first matching group in the
order given, then the defaults. It sets the environment variables that the
server extension and jupyter-ai read. With `UserKeys`, it also mints or reuses
the user's gateway key. The environment is merged into the spawner's own, so
``c.KubeSpawner.environment`` and the Helm chart's ``singleuser.extraEnv`` keep
working.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gateway_keys import (
    GatewayKeyClient,
    GatewayKeyError,
    GatewayKeyManager,
    read_master_key,
)
from .options import (
    HubConfigError,
    ModelChoice,
    UserKeys,
    check_model_id,
    check_model_list,
    check_overrides,
    check_url,
)

UPSTREAM_URL_ENV = "AKKO_LLM_UPSTREAM_URL"
API_KEY_ENV = "AKKO_LLM_API_KEY"
API_KEY_FILE_ENV = "AKKO_LLM_API_KEY_FILE"
PROVIDER_ENV = "JUPYTER_AI_DEFAULT_PROVIDER"
CHAT_MODEL_ENV = "JUPYTER_AI_DEFAULT_MODEL"
EMBEDDINGS_MODEL_ENV = "AKKO_LLM_EMBEDDINGS_MODEL"
COMPLETIONS_MODEL_ENV = "AKKO_LLM_COMPLETIONS_MODEL"

# The jupyter-ai provider id of this package.
PROVIDER_ID = "akko"

hub_log = logging.getLogger("JupyterHub")


@dataclass
class SpawnerSetup:
    """The settings and hooks that `configure_spawner` installed on a Spawner."""

    upstream_url: str
    defaults: ModelChoice
    groups: dict[str, dict[str, object]]
    profiles: dict[str, dict[str, object]]
    api_key_file: str
    share_master_key: bool
    master_key_env: str
    master_key_file: str
    user_keys: UserKeys | None
    key_manager: GatewayKeyManager | None = None
    previous_pre_spawn_hook: Any = None
    previous_post_stop_hook: Any = None

    @property
    def master_key_source(self) -> str:
        if self.master_key_file:
            return f"the file {self.master_key_file}"
        return f"the Hub's environment variable {self.master_key_env}"

    def master_key(self) -> str:
        """Return the Hub's master key ('' when none is configured)."""
        try:
            return read_master_key(self.master_key_env, self.master_key_file)
        except OSError as error:
            raise GatewayKeyError(
                f"Cannot read the gateway master key from {self.master_key_source}: "
                f"{error.strerror}. Check the secret mounted on the Hub.",
                "master_key_missing",
            ) from None

    def models_for(self, spawner) -> tuple[ModelChoice, str]:
        """Return the user's models and where they come from.

        The source is "profile <slug>", "group <name>" or "defaults".
        """
        profile = (getattr(spawner, "user_options", None) or {}).get("profile")
        if isinstance(profile, str) and profile in self.profiles:
            return self.defaults.with_override(
                self.profiles[profile]
            ), f"profile {profile}"
        group_names = {group.name for group in getattr(spawner.user, "groups", [])}
        for group, override in self.groups.items():
            if group in group_names:
                return self.defaults.with_override(override), f"group {group}"
        return self.defaults, "defaults"

    def model_environment(self, models: ModelChoice) -> dict[str, str]:
        return {
            UPSTREAM_URL_ENV: self.upstream_url,
            PROVIDER_ENV: PROVIDER_ID,
            CHAT_MODEL_ENV: f"{PROVIDER_ID}:{models.chat_model}",
            EMBEDDINGS_MODEL_ENV: models.embeddings_model,
            COMPLETIONS_MODEL_ENV: models.completions_model,
        }

    async def pre_spawn_hook(self, spawner) -> None:
        """Set the user's environment and credential; runs before each spawn."""
        if self.previous_pre_spawn_hook is not None:
            result = self.previous_pre_spawn_hook(spawner)
            if inspect.isawaitable(result):
                await result

        username = spawner.user.name
        models, chosen_by = self.models_for(spawner)
        environment = dict(spawner.environment)
        environment.update(self.model_environment(models))
        environment.pop(API_KEY_ENV, None)
        environment.pop(API_KEY_FILE_ENV, None)
        environment.update(self.shared_credential(spawner))
        if self.key_manager is not None:
            environment.update(await self.user_credential(spawner, models))

        self.check_no_master_key(environment)
        spawner.environment = environment
        spawner.log.info(
            "akko-llm: %s gets chat model %s, embeddings %s, completions %s (from %s)",
            username,
            models.chat_model,
            models.embeddings_model,
            models.completions_model,
            chosen_by,
        )

    def shared_credential(self, spawner) -> dict[str, str]:
        """Return the environment for the credential that every user shares."""
        if self.share_master_key:
            spawner.log.warning(
                "akko-llm: putting the gateway master key into %s's server "
                "environment (share_master_key=True). Users can read it.",
                spawner.user.name,
            )
            master_key = self.master_key()
            if not master_key:
                raise GatewayKeyError(
                    f"share_master_key=True, but {self.master_key_source} is empty. "
                    "Set the master key on the Hub.",
                    "master_key_missing",
                )
            return {API_KEY_ENV: master_key}
        if self.api_key_file:
            return {API_KEY_FILE_ENV: self.api_key_file}
        return {}

    async def user_credential(self, spawner, models: ModelChoice) -> dict[str, str]:
        """Mint or reuse the user's key; return its environment (or {} on fallback)."""
        assert self.key_manager is not None and self.user_keys is not None
        username = spawner.user.name
        try:
            if not self.master_key():
                raise GatewayKeyError(
                    f"Per-user gateway keys need the master key on the Hub, but "
                    f"{self.master_key_source} is empty. Set it from the gateway's "
                    "secret.",
                    "master_key_missing",
                )
            key = await self.key_manager.key_for(username, models.models_for_key())
        except GatewayKeyError as error:
            if self.user_keys.on_gateway_error == "fail":
                spawner.log.error(
                    "akko-llm: no gateway key for %s, so the spawn fails: %s",
                    username,
                    error,
                )
                raise
            spawner.log.warning(
                "akko-llm: no gateway key for %s, starting with the shared credential "
                "(UserKeys.on_gateway_error='fallback'): %s",
                username,
                error,
            )
            return {}

        if self.user_keys.delivery == "file":
            path = write_key_file(self.user_keys.key_file, spawner, key)
            return {API_KEY_FILE_ENV: str(path)}
        return {API_KEY_ENV: key}

    def check_no_master_key(self, environment: Mapping[str, Any]) -> None:
        """Raise when a user's environment contains the master key without opt-in."""
        if self.share_master_key:
            return
        try:
            master_key = self.master_key()
        except GatewayKeyError:
            return
        if not master_key:
            return
        # NOTE: callables in Spawner.environment are resolved by the spawner
        # after this hook, so their values cannot be checked here.
        leaking = sorted(
            name
            for name, value in environment.items()
            if isinstance(value, str) and master_key in value
        )
        if leaking:
            raise GatewayKeyError(
                "The gateway master key is in the users' server environment "
                f"(variable {', '.join(leaking)}), so the spawn is stopped. Remove "
                "it from the Spawner's environment; pass share_master_key=True to "
                "configure_spawner only if users may have it.",
                "master_key_in_environment",
            )

    async def post_stop_hook(self, spawner) -> None:
        """Revoke the user's key after the server stopped (with ``revoke_on_stop``)."""
        if self.previous_post_stop_hook is not None:
            result = self.previous_post_stop_hook(spawner)
            if inspect.isawaitable(result):
                await result
        if self.key_manager is None:
            return
        try:
            await self.key_manager.revoke(spawner.user.name)
        except GatewayKeyError as error:
            spawner.log.error(
                "akko-llm: could not revoke the gateway key of %s: %s",
                spawner.user.name,
                error,
            )


def write_key_file(template: str, spawner, key: str) -> Path:
    """Write ``key`` to the user's key file with mode 0600; return its path."""
    path = Path(template.format(username=spawner.user.name))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as key_file:
        key_file.write(key + "\n")
    _give_to_user(spawner, path.parent, temporary)
    # A rename replaces the file at once, so the server never reads half a key.
    os.replace(temporary, path)
    return path


def _give_to_user(spawner, directory: Path, key_path: Path) -> None:
    """Give the key file to the server's Unix user when the Hub runs as root."""
    if os.geteuid() != 0:
        return
    try:
        import pwd

        entry = pwd.getpwnam(spawner.user.name)
    except (ImportError, KeyError):
        return
    os.chown(directory, entry.pw_uid, entry.pw_gid)
    os.chown(key_path, entry.pw_uid, entry.pw_gid)


def configure_spawner(
    config,
    *,
    upstream_url: str,
    chat_model: str = "qwen2.5:3b",
    embeddings_model: str = "nomic-embed-text",
    completions_model: str = "qwen2.5-coder:7b",
    allowed_models: Sequence[str] | None = None,
    groups: Mapping[str, Mapping[str, object]] | None = None,
    profiles: Mapping[str, Mapping[str, object]] | None = None,
    api_key_file: str = "",
    user_keys: UserKeys | None = None,
    share_master_key: bool = False,
    master_key_env: str = "LITELLM_MASTER_KEY",
    master_key_file: str = "",
    spawner_section: str = "Spawner",
) -> SpawnerSetup:
    """Wire every user's server to the gateway; call it in ``jupyterhub_config.py``.

    ``config`` is the ``c`` of ``jupyterhub_config.py``. The models are gateway
    model ids. ``groups`` and ``profiles`` map a JupyterHub group name or a
    profile slug to overrides of ``chat_model``, ``embeddings_model``,
    ``completions_model`` and ``allowed_models``. ``api_key_file`` is the path,
    inside each user's server, of a mounted secret with a shared gateway key
    (never the master key). ``user_keys`` turns on per-user gateway keys. The
    Hub reads the master key from ``master_key_file`` or the environment
    variable ``master_key_env``. ``share_master_key=True`` puts it in every
    user's environment, which lets every user read it.

    Install your own ``pre_spawn_hook`` or ``post_stop_hook`` before this call;
    the hooks installed here run it first. Raises `HubConfigError` for a bad
    argument.
    """
    upstream_url = check_url("upstream_url", upstream_url)
    defaults = ModelChoice(
        chat_model=check_model_id("chat_model", chat_model),
        embeddings_model=check_model_id("embeddings_model", embeddings_model),
        completions_model=check_model_id("completions_model", completions_model),
        allowed_models=(
            check_model_list("allowed_models", allowed_models)
            if allowed_models is not None
            else ()
        ),
    )
    groups = check_overrides("groups", groups or {})
    profiles = check_overrides("profiles", profiles or {})
    if not isinstance(api_key_file, str) or (
        api_key_file and not api_key_file.startswith("/")
    ):
        raise HubConfigError(
            "api_key_file must be an absolute path inside users' servers, such as "
            f"'/etc/akko-llm/api-key', or empty; not {api_key_file!r}."
        )
    if not isinstance(master_key_env, str) or not master_key_env:
        raise HubConfigError(
            f"master_key_env must name an environment variable, not {master_key_env!r}."
        )
    if user_keys is not None:
        if not isinstance(user_keys, UserKeys):
            raise HubConfigError(
                f"user_keys must be a UserKeys(...) or None, not {user_keys!r}."
            )
        user_keys = user_keys.checked(upstream_url)
        if user_keys.on_gateway_error == "fallback" and not (
            api_key_file or share_master_key
        ):
            raise HubConfigError(
                "UserKeys.on_gateway_error='fallback' needs a credential to fall back "
                "on: set api_key_file (a shared key mounted in users' servers)."
            )
    if share_master_key is not True and share_master_key is not False:
        raise HubConfigError(
            f"share_master_key must be True or False, not {share_master_key!r}."
        )
    if share_master_key:
        hub_log.warning(
            "akko-llm: share_master_key=True puts the gateway master key into "
            "every user's server environment, where users can read it. Prefer "
            "UserKeys(...) or api_key_file."
        )

    section = config[spawner_section]
    setup = SpawnerSetup(
        upstream_url=upstream_url,
        defaults=defaults,
        groups=groups,
        profiles=profiles,
        api_key_file=api_key_file,
        share_master_key=share_master_key,
        master_key_env=master_key_env,
        master_key_file=master_key_file,
        user_keys=user_keys,
        previous_pre_spawn_hook=section.get("pre_spawn_hook"),
        previous_post_stop_hook=section.get("post_stop_hook"),
    )
    if user_keys is not None:
        client = GatewayKeyClient(
            user_keys.gateway_url,
            setup.master_key,
            setup.master_key_source,
            user_keys.request_timeout,
        )
        setup.key_manager = GatewayKeyManager(client, user_keys, hub_log)

    # Plain functions, because traitlets deep-copies configured values into each
    # spawner, and a copy of a bound method would copy the setup and its keys.
    async def pre_spawn_hook(spawner) -> None:
        await setup.pre_spawn_hook(spawner)

    async def post_stop_hook(spawner) -> None:
        await setup.post_stop_hook(spawner)

    section.pre_spawn_hook = pre_spawn_hook
    if user_keys is not None and user_keys.revoke_on_stop:
        section.post_stop_hook = post_stop_hook
    return setup
