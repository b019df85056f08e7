"""jupyter-ai's default models from the spawner's environment, and the gateway's model list.

`AkkoJupyterAI` contains the settings (``c.AkkoJupyterAI.<setting>``, or the
environment variables named in each help). `JupyterAISetup.link` runs while the
server extension loads, before jupyter-ai's own extension reads its settings
(extensions load in alphabetical order: ``akko_jupyter_llm`` before
``jupyter_ai``). It turns the settings into ``AiExtension.default_language_model``,
``default_embeddings_model`` and ``default_completions_model``, because
jupyter-ai itself reads no ``JUPYTER_AI_*`` variable.

Once the server listens, `JupyterAISetup.start` registers the endpoint for the
providers, reads the gateway's models in the background (the server's start
never waits for it), refreshes them periodically, and applies
``default_model_precedence`` to the user's saved choice in jupyter-ai's
config.json.

Nothing here imports jupyter-ai until it is known to be enabled.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from traitlets import Enum, Float, Unicode, default
from traitlets.config import Configurable

from .defaults import (
    CHAT_MODEL_ENV,
    COMPLETIONS_MODEL_ENV,
    DEFAULT_CHAT_MODEL,
    DEFAULT_COMPLETIONS_MODEL,
    DEFAULT_EMBEDDINGS_MODEL,
    EMBEDDINGS_MODEL_ENV,
)
from .model_catalog import CATALOG
from .model_refresh import ModelListRefresh

if TYPE_CHECKING:
    from jupyter_server.extension.application import ExtensionApp

PROVIDER_ID = "akko"

PRECEDENCE_FILL_MISSING = "fill-missing"
PRECEDENCE_REPLACE_UNSERVED = "replace-unserved"
PRECEDENCE_ALWAYS = "always"

# jupyter-ai's config.json keys, the AiExtension traits that feed their
# defaults, and whether the gateway serves them as chat or embedding models.
_CONFIG_KEYS = {
    "model_provider_id": ("default_language_model", "chat"),
    "completions_model_provider_id": ("default_completions_model", "chat"),
    "embeddings_provider_id": ("default_embeddings_model", "embedding"),
}


def _env_text(name: str, fallback: str) -> str:
    return os.environ.get(name, "").strip() or fallback


def _env_seconds(name: str, fallback: float, problems: list[str]) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return fallback
    try:
        return float(raw)
    except ValueError:
        problems.append(
            f"{name}={raw!r} is not a number of seconds; set a number or unset "
            f"it to use the default {fallback:g}"
        )
        return fallback


def qualify_model_id(provider_id: str, model_id: str) -> str:
    """Return ``<provider>:<model>``, accepting ``model_id`` with or without the prefix.

    ``qwen2.5:3b`` and ``akko:qwen2.5:3b`` both give ``akko:qwen2.5:3b``: only
    the provider's own id counts as a prefix, since gateway ids contain colons.
    """
    model_id = model_id.strip()
    if model_id.startswith(f"{provider_id}:"):
        model_id = model_id[len(provider_id) + 1 :]
    return f"{provider_id}:{model_id}"


class AkkoJupyterAI(Configurable):
    """Settings for jupyter-ai's use of the platform's models (jupyter-ai 2.x)."""

    default_provider = Unicode(
        help="""jupyter-ai provider of the default chat model.

        Normally "akko", the platform's gateway. Default from the environment
        variable JUPYTER_AI_DEFAULT_PROVIDER (empty or blank means "akko").
        """,
    ).tag(config=True)

    default_model = Unicode(
        help=f"""Default chat model of jupyter-ai's chat and of %%ai without a model id.

        A model id of the provider, with or without its prefix: "qwen2.5:3b"
        and "akko:qwen2.5:3b" are the same. Default from the environment
        variable JUPYTER_AI_DEFAULT_MODEL (empty or blank means
        "{DEFAULT_CHAT_MODEL}").

        Example: c.AkkoJupyterAI.default_model = "qwen2.5-coder:7b"
        """,
    ).tag(config=True)

    embeddings_model = Unicode(
        help=f"""Default embeddings model (for /learn and /ask), a gateway model id.

        Default from the environment variable AKKO_LLM_EMBEDDINGS_MODEL (empty
        or blank means "{DEFAULT_EMBEDDINGS_MODEL}").
        """,
    ).tag(config=True)

    completions_model = Unicode(
        help=f"""Default model for inline completions, a gateway model id.

        Default from the environment variable AKKO_LLM_COMPLETIONS_MODEL (empty
        or blank means "{DEFAULT_COMPLETIONS_MODEL}").
        """,
    ).tag(config=True)

    default_model_precedence = Enum(
        [PRECEDENCE_FILL_MISSING, PRECEDENCE_REPLACE_UNSERVED, PRECEDENCE_ALWAYS],
        help="""Whether the defaults above or the user's saved choice wins in jupyter-ai.

        jupyter-ai saves each user's choice of models in its config.json.
        - "fill-missing" (default): the defaults apply only where the user has
          no saved choice, as jupyter-ai itself does;
        - "replace-unserved": also replace a saved akko model that the gateway
          no longer serves, once the gateway's model list has been read;
        - "always": the defaults replace the saved choice at every server
          start; the user can still change it until the next start.
        Default from the environment variable AKKO_LLM_DEFAULT_MODEL_PRECEDENCE.

        Example: c.AkkoJupyterAI.default_model_precedence = "replace-unserved"
        """,
    ).tag(config=True)

    models_timeout = Float(
        help="""Seconds to wait for the gateway's model list when the server starts.

        The server does not wait for it: until the list is read, jupyter-ai
        offers the default models. Default 5.
        From the environment variable AKKO_LLM_MODELS_TIMEOUT.
        """,
    ).tag(config=True)

    models_refresh_interval = Float(
        help="""Seconds between two readings of the gateway's model list.

        0 means the list is read only at start. Default 300.
        From the environment variable AKKO_LLM_MODELS_REFRESH_INTERVAL.
        """,
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        self.env_problems: list[str] = []
        super().__init__(**kwargs)

    @default("default_provider")
    def _default_default_provider(self) -> str:
        return _env_text("JUPYTER_AI_DEFAULT_PROVIDER", PROVIDER_ID)

    @default("default_model")
    def _default_default_model(self) -> str:
        fallback = DEFAULT_CHAT_MODEL if self.default_provider == PROVIDER_ID else ""
        return _env_text(CHAT_MODEL_ENV, fallback)

    @default("embeddings_model")
    def _default_embeddings_model(self) -> str:
        return _env_text(EMBEDDINGS_MODEL_ENV, DEFAULT_EMBEDDINGS_MODEL)

    @default("completions_model")
    def _default_completions_model(self) -> str:
        return _env_text(COMPLETIONS_MODEL_ENV, DEFAULT_COMPLETIONS_MODEL)

    @default("default_model_precedence")
    def _default_default_model_precedence(self) -> str:
        name = "AKKO_LLM_DEFAULT_MODEL_PRECEDENCE"
        raw = os.environ.get(name, "").strip()
        choices = [PRECEDENCE_FILL_MISSING, PRECEDENCE_REPLACE_UNSERVED, PRECEDENCE_ALWAYS]
        if raw and raw not in choices:
            self.env_problems.append(
                f"{name}={raw!r} is not one of {', '.join(choices)}; using "
                f"{PRECEDENCE_FILL_MISSING}"
            )
            return PRECEDENCE_FILL_MISSING
        return raw or PRECEDENCE_FILL_MISSING

    @default("models_timeout")
    def _default_models_timeout(self) -> float:
        return _env_seconds("AKKO_LLM_MODELS_TIMEOUT", 5.0, self.env_problems)

    @default("models_refresh_interval")
    def _default_models_refresh_interval(self) -> float:
        return _env_seconds("AKKO_LLM_MODELS_REFRESH_INTERVAL", 300.0, self.env_problems)

    def default_ids(self) -> dict[str, str | None]:
        """Return the default model of each jupyter-ai config key, as ``provider:model``."""
        chat = self.default_model.strip()
        provider = self.default_provider.strip() or PROVIDER_ID
        embeddings = self.embeddings_model.strip()
        completions = self.completions_model.strip()
        return {
            "model_provider_id": qualify_model_id(provider, chat) if chat else None,
            "completions_model_provider_id": (
                qualify_model_id(PROVIDER_ID, completions) if completions else None
            ),
            "embeddings_provider_id": (
                qualify_model_id(PROVIDER_ID, embeddings) if embeddings else None
            ),
        }


class JupyterAISetup(ModelListRefresh):
    """Connects jupyter-ai, when it is enabled, to the platform's models."""

    def __init__(self, extension_app: ExtensionApp, ai_extension: Any) -> None:
        self.extension_app = extension_app
        self.serverapp = extension_app.serverapp
        self.log = extension_app.log
        self.ai_extension = ai_extension
        self.settings = AkkoJupyterAI(parent=extension_app)
        self.defaults = self.settings.default_ids()
        self._init_refresh()
        self._precedence_applied = False
        self._warned_unserved: set[str] = set()

    @classmethod
    def link(cls, extension_app: ExtensionApp) -> JupyterAISetup | None:
        """Set jupyter-ai's defaults, or return None when jupyter-ai is not enabled here."""
        point = extension_app.serverapp.extension_manager.extension_points.get("jupyter_ai")
        if point is None or point.app is None:
            return None
        setup = cls(extension_app, point.app)
        setup._set_ai_extension_defaults()
        return setup

    def _set_ai_extension_defaults(self) -> None:
        for problem in self.settings.env_problems:
            self.log.error("akko-llm is misconfigured: %s", problem)

        if "jai_config_manager" in self.ai_extension.settings:
            # NOTE: happens only if jupyter_ai loads before this extension,
            # which the alphabetical load order of jupyter_server 2 prevents.
            self.log.warning(
                "akko-llm: jupyter-ai started before akko_jupyter_llm, so its "
                "default models stay unset; set c.AiExtension.default_language_model "
                "instead"
            )
            return

        configured = self.ai_extension.config.get("AiExtension", {})
        for key, (trait, _) in _CONFIG_KEYS.items():
            model_id = self.defaults[key]
            if trait in configured:
                self.log.info(
                    "akko-llm: c.AiExtension.%s = %r is configured explicitly and "
                    "takes precedence over %r",
                    trait,
                    getattr(self.ai_extension, trait),
                    model_id,
                )
                self.defaults[key] = getattr(self.ai_extension, trait)
                continue
            if model_id:
                setattr(self.ai_extension, trait, model_id)

        CATALOG.set_fallback(
            [
                _akko_local_id(self.defaults["model_provider_id"]),
                _akko_local_id(self.defaults["completions_model_provider_id"]),
            ],
            [_akko_local_id(self.defaults["embeddings_provider_id"])],
        )
        self.log.info(
            "akko-llm: jupyter-ai defaults: chat %s, inline completions %s, "
            "embeddings %s; precedence over saved choices: %s",
            self.defaults["model_provider_id"],
            self.defaults["completions_model_provider_id"],
            self.defaults["embeddings_provider_id"],
            self.settings.default_model_precedence,
        )

    # ------------------------------------------------------------ after start

    def start(self) -> None:
        """Register the endpoint and read the models in the background; call once the server listens."""
        client = "the akko providers of jupyter-ai"
        if self.register_endpoint(self.serverapp, client) is None:
            return

        self._apply_precedence(served=None)
        self.start_refresh()

    def fallback_description(self) -> str:
        models = ", ".join(CATALOG.chat_models + CATALOG.embedding_models)
        return f"jupyter-ai offers the default models ({models})"

    def on_models(self, chat_models: list[str], embedding_models: list[str]) -> None:
        self._warn_unserved_defaults(chat_models, embedding_models)
        self._apply_precedence(
            served={"chat": set(chat_models), "embedding": set(embedding_models)}
        )

    def _warn_unserved_defaults(
        self, chat_models: list[str], embedding_models: list[str]
    ) -> None:
        served = {"chat": chat_models, "embedding": embedding_models}
        for key, (trait, kind) in _CONFIG_KEYS.items():
            model_id = self.defaults[key]
            if not model_id or not model_id.startswith(f"{PROVIDER_ID}:"):
                continue
            if _local_id(model_id) in served[kind] or model_id in self._warned_unserved:
                continue
            self._warned_unserved.add(model_id)
            self.log.warning(
                "akko-llm: the default %s model %s (AiExtension.%s) is not served "
                "by the gateway, which serves %s models: %s. Set a served model in "
                "the spawner's environment or in c.AkkoJupyterAI.",
                kind,
                model_id,
                trait,
                kind,
                ", ".join(served[kind]) or "(none)",
            )

    def _config_manager(self):
        return self.serverapp.web_app.settings.get("jai_config_manager")

    def _apply_precedence(self, served: dict[str, set[str]] | None) -> None:
        """Change the saved choices in jupyter-ai's config.json as the precedence says.

        ``served`` is None before the gateway's list is known; replacing
        unserved choices waits for it, and happens once.
        """
        config_manager = self._config_manager()
        if config_manager is None:
            return
        precedence = self.settings.default_model_precedence
        if served is not None and self._precedence_applied:
            return

        from jupyter_ai.models import UpdateConfigRequest

        saved = config_manager._read_config()
        update: dict[str, str] = {}
        for key, (_, kind) in _CONFIG_KEYS.items():
            default_id = self.defaults[key]
            current = getattr(saved, key)
            if not default_id or current == default_id:
                continue
            if current is None:
                # jupyter-ai clears a saved choice whose provider is gone.
                update[key] = default_id
            elif precedence == PRECEDENCE_ALWAYS and served is None:
                update[key] = default_id
            elif (
                precedence == PRECEDENCE_REPLACE_UNSERVED
                and served is not None
                and current.startswith(f"{PROVIDER_ID}:")
                and _local_id(current) not in served[kind]
                and _local_id(default_id) in served[kind]
            ):
                update[key] = default_id
        if served is not None:
            self._precedence_applied = True
        if not update:
            return
        for key, model_id in update.items():
            self.log.info(
                "akko-llm: jupyter-ai's %s was %r, now %r (precedence %s)",
                key,
                getattr(saved, key),
                model_id,
                precedence,
            )
        try:
            config_manager.update_config(UpdateConfigRequest(**update))
        except Exception as error:  # noqa: BLE001 - jupyter-ai raises many kinds
            self.log.error(
                "akko-llm: cannot write jupyter-ai's config %s: %s",
                getattr(config_manager, "config_path", "config.json"),
                error,
            )

    async def stop(self) -> None:
        await self.stop_refresh()


def _local_id(model_id: str | None) -> str:
    """Return the model id without its provider prefix ("" for None)."""
    if not model_id:
        return ""
    return model_id.split(":", 1)[1] if ":" in model_id else model_id


def _akko_local_id(model_id: str | None) -> str:
    """Return the gateway model id of an ``akko:`` model id, else ""."""
    if not model_id or not model_id.startswith(f"{PROVIDER_ID}:"):
        return ""
    return _local_id(model_id)
