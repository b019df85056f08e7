"""jupyter-ai 3.x defaults from the spawner's environment, and the gateway's model list.

`JupyterAI3Setup.link` runs while the server extension loads, before the
jupyter-ai 3.x extensions read their settings (extensions load in alphabetical
order: ``akko_jupyter_llm`` before ``jupyter_ai_*``). It makes the ``AKKO``
persona the default persona (``PersonaManager.default_persona_id``) and, when
Jupyternaut is enabled, sets its default models to the gateway's models as
LiteLLM ids (``litellm_proxy/<gateway model id>``), unless the Jupyter config
sets them explicitly.

The defaults come from `jupyter_ai_defaults.AkkoJupyterAI`, the same settings
and environment variables as for jupyter-ai 2.x (``JUPYTER_AI_DEFAULT_MODEL``,
``AKKO_LLM_EMBEDDINGS_MODEL``, ``AKKO_LLM_COMPLETIONS_MODEL``, ...).

Once the server listens, `JupyterAI3Setup.start` registers the endpoint for the
persona, reads the gateway's models in the background and refreshes them
periodically, and republishes them to the model picker of every open chat.

This module imports no jupyter-ai module at import time, so the server
extension imports it whatever is installed.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from traitlets.config import Config

from .defaults import DefaultModels, read_default_models, strip_provider_prefix
from .jupyter_ai_defaults import AkkoJupyterAI
from .model_catalog import CATALOG
from .model_refresh import ModelListRefresh

if TYPE_CHECKING:
    from jupyter_server.extension.application import ExtensionApp

# BasePersona.id is "jupyter-ai-personas::<top-level package>::<class name>".
AKKO_PERSONA_ID = "jupyter-ai-personas::akko_jupyter_llm::AkkoPersona"

# LiteLLM's provider for an OpenAI-compatible gateway. Its URL and key come from
# LITELLM_PROXY_API_BASE and LITELLM_PROXY_API_KEY when a call names none.
LITELLM_PROVIDER = "litellm_proxy"
LITELLM_BASE_ENV = "LITELLM_PROXY_API_BASE"
LITELLM_KEY_ENV = "LITELLM_PROXY_API_KEY"

# JupyternautExtension traits and the kind of default model that each gets.
_JUPYTERNAUT_TRAITS = {
    "initial_language_model": "chat",
    "default_completions_model": "completions",
    "default_embeddings_model": "embeddings",
}

# The defaults in force in this process, set when the server extension links.
_defaults: DefaultModels | None = None


def current_default_models() -> DefaultModels:
    """Return the default gateway models: the server's settings, else the environment's."""
    return _defaults if _defaults is not None else read_default_models()


def litellm_model_id(model_id: str) -> str:
    """Return the LiteLLM id of a gateway model, for example ``litellm_proxy/qwen2.5:3b``."""
    return f"{LITELLM_PROVIDER}/{strip_provider_prefix(model_id)}"


def _explicitly_configured(app: Any, class_name: str, trait: str) -> bool:
    section = app.config.get(class_name, {})
    return trait in section


class JupyterAI3Setup(ModelListRefresh):
    """Connects jupyter-ai 3.x, when it is enabled, to the platform's models."""

    def __init__(self, extension_app: ExtensionApp, persona_app: Any) -> None:
        self.serverapp = extension_app.serverapp
        self.log = extension_app.log
        self.persona_app = persona_app
        self.settings = AkkoJupyterAI(parent=extension_app)
        self.jupyternaut_app = self._extension_app("jupyter_ai_jupyternaut")
        self._init_refresh()
        self._warned_unserved = False

    def _extension_app(self, name: str) -> Any:
        point = self.serverapp.extension_manager.extension_points.get(name)
        return None if point is None else point.app

    @classmethod
    def link(cls, extension_app: ExtensionApp) -> JupyterAI3Setup | None:
        """Set jupyter-ai 3.x's defaults, or return None when its persona manager is not enabled."""
        points = extension_app.serverapp.extension_manager.extension_points
        point = points.get("jupyter_ai_persona_manager")
        if point is None or point.app is None:
            return None
        setup = cls(extension_app, point.app)
        setup._set_defaults()
        return setup

    def default_models(self) -> DefaultModels:
        """Return the gateway ids of the default models from `AkkoJupyterAI`."""
        environment = read_default_models()
        return DefaultModels(
            chat=strip_provider_prefix(self.settings.default_model.strip())
            or environment.chat,
            embeddings=self.settings.embeddings_model.strip() or environment.embeddings,
            completions=self.settings.completions_model.strip()
            or environment.completions,
        )

    def _set_defaults(self) -> None:
        global _defaults
        for problem in self.settings.env_problems:
            self.log.error("akko-llm is misconfigured: %s", problem)
        _defaults = self.default_models()
        CATALOG.set_fallback([_defaults.chat, _defaults.completions], [_defaults.embeddings])

        if _explicitly_configured(self.persona_app, "PersonaManager", "default_persona_id"):
            self.log.info(
                "akko-llm: c.PersonaManager.default_persona_id is configured "
                "explicitly and takes precedence over %s",
                AKKO_PERSONA_ID,
            )
        else:
            self.persona_app.update_config(
                Config({"PersonaManager": {"default_persona_id": AKKO_PERSONA_ID}})
            )

        jupyternaut = self.jupyternaut_app
        if jupyternaut is not None:
            for trait, kind in _JUPYTERNAUT_TRAITS.items():
                if _explicitly_configured(jupyternaut, "JupyternautExtension", trait):
                    continue
                setattr(jupyternaut, trait, litellm_model_id(getattr(_defaults, kind)))

        self.log.info(
            "akko-llm: jupyter-ai 3 defaults: persona %s, chat %s, inline "
            "completions %s, embeddings %s%s",
            AKKO_PERSONA_ID,
            _defaults.chat,
            _defaults.completions,
            _defaults.embeddings,
            " (also for Jupyternaut)" if jupyternaut is not None else "",
        )

    # ------------------------------------------------------------ after start

    def start(self) -> None:
        """Register the endpoint and read the models in the background; call once the server listens."""
        endpoint = self.register_endpoint(
            self.serverapp, "the AKKO persona of jupyter-ai"
        )
        if endpoint is None:
            return
        url, token = endpoint
        if self.jupyternaut_app is not None:
            # Jupyternaut calls LiteLLM, which reads the gateway's URL and key
            # from these variables. The key is the user's own token, which
            # kernels already have (AKKO_LLM_TOKEN or JUPYTERHUB_API_TOKEN).
            # NOTE: kernels inherit both variables; values set by the admin win.
            os.environ.setdefault(LITELLM_BASE_ENV, url)
            os.environ.setdefault(LITELLM_KEY_ENV, token or "no-token")

        self.start_refresh()

    def fallback_description(self) -> str:
        models = ", ".join(CATALOG.chat_models)
        return f"the AKKO persona offers the default models ({models})"

    def on_models(self, chat_models: list[str], embedding_models: list[str]) -> None:
        default_chat = current_default_models().chat
        if default_chat not in chat_models and not self._warned_unserved:
            self._warned_unserved = True
            self.log.warning(
                "akko-llm: the default chat model %s is not served by the gateway, "
                "which serves: %s. Set a served model in JUPYTER_AI_DEFAULT_MODEL.",
                default_chat,
                ", ".join(chat_models) or "(none)",
            )
        # The persona module is loaded once a chat has opened; before that,
        # new personas read the catalog when they are created.
        persona_module = sys.modules.get("akko_jupyter_llm.jupyter_ai3_persona")
        if persona_module is not None:
            persona_module.publish_model_lists()

    async def stop(self) -> None:
        await self.stop_refresh()
