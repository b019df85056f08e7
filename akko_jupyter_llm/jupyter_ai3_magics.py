"""``%load_ext akko_jupyter_llm`` with jupyter-ai 3.x: its ``%%ai`` magics on the platform's models.

jupyter-ai 3.x's magics (package ``jupyter-ai-magic-commands``) call LiteLLM
with LiteLLM model ids. Loading the extension in a kernel started by a Jupyter
server with this package:

- loads those magics;
- reads the gateway's chat models through the server's ``akko-llm/v1``
  endpoint (the configured defaults when it cannot);
- adds aliases that LiteLLM sends to that endpoint as ``litellm_proxy/<model>``:
  ``chat`` (the default chat model, ``JUPYTER_AI_DEFAULT_MODEL``), ``coder``
  (the completions model, ``AKKO_LLM_COMPLETIONS_MODEL``) and each served chat
  model by its gateway id, so ``%%ai qwen2.5:3b`` works;
- makes ``%%ai`` without a model id use the default chat model, unless
  ``c.AiMagics.initial_language_model`` is set in the IPython config.

LiteLLM authenticates with ``LITELLM_PROXY_API_KEY``, which is set in the
kernel's environment to the user's own Jupyter or JupyterHub token (never the
gateway key) unless it is already set.

`magics.load_ipython_extension` calls this module when jupyter-ai 3.x is installed.
"""

from __future__ import annotations

import os
import sys

from .defaults import read_default_models
from .jupyter_ai3_defaults import LITELLM_KEY_ENV, litellm_model_id
from .kernel_env import kernel_credentials
from .model_catalog import CATALOG, ModelListError, fetch_models

# Seconds a kernel waits for the model list when the extension loads.
MODELS_TIMEOUT = 5.0


def _read_models() -> str | None:
    """Fill the catalog; return a warning when the gateway's list is unavailable."""
    defaults = read_default_models()
    CATALOG.set_fallback([defaults.chat, defaults.completions], [defaults.embeddings])
    try:
        chat_models, embedding_models = fetch_models(MODELS_TIMEOUT)
    except (ModelListError, RuntimeError) as error:
        return (
            "akko_jupyter_llm: cannot read the gateway's models, so %%ai has "
            f"aliases for the default models only: {error}"
        )
    CATALOG.update(chat_models, embedding_models)
    return None


def gateway_aliases(base_url: str) -> dict[str, dict[str, str | None]]:
    """Return jupyter-ai 3.x alias entries for the default and the served chat models."""
    defaults = read_default_models()

    def alias(model_id: str) -> dict[str, str | None]:
        # api_key_name stays empty: jupyter-ai-magic-commands 0.0.4 passes its
        # value to LiteLLM as an unknown parameter, not as the key.
        return {
            "target": litellm_model_id(model_id),
            "api_base": base_url,
            "api_key_name": None,
        }

    aliases = {model_id: alias(model_id) for model_id in CATALOG.chat_models}
    aliases["chat"] = alias(defaults.chat)
    aliases["coder"] = alias(defaults.completions)
    return aliases


def load_ipython_extension(ipython) -> None:
    """Load jupyter-ai 3.x's magics and add aliases for the gateway's models."""
    try:
        import jupyter_ai_magic_commands
    except ImportError:
        print(
            "akko_jupyter_llm: jupyter-ai 3's magics are not installed, so %%ai "
            "is not available. Install them with: "
            "pip install 'akko-jupyter-llm[jupyter-ai3]'",
            file=sys.stderr,
        )
        return

    try:
        base_url, token = kernel_credentials()
    except RuntimeError as error:
        print(f"akko_jupyter_llm: %%ai cannot reach the models: {error}", file=sys.stderr)
        return

    warning = _read_models()
    if warning:
        print(warning, file=sys.stderr)

    registry = ipython.magics_manager.registry
    if "AiMagics" not in registry:
        jupyter_ai_magic_commands.load_ipython_extension(ipython)
    magics = registry["AiMagics"]

    for name, entry in gateway_aliases(base_url).items():
        magics.aliases.setdefault(name, entry)
    if "initial_language_model" not in ipython.config.get("AiMagics", {}):
        magics.initial_language_model = "chat"

    current_key = os.environ.get(LITELLM_KEY_ENV, "")
    if not current_key:
        # The OpenAI-style "Authorization: Bearer <token>" that LiteLLM sends
        # is accepted by Jupyter as the user's token.
        os.environ[LITELLM_KEY_ENV] = token or "no-token"
    elif token and current_key != token:
        print(
            f"akko_jupyter_llm: {LITELLM_KEY_ENV} is already set to another "
            "value, so the %%ai aliases send it to this server's model endpoint, "
            f"which rejects it unless it is this server's token. Unset "
            f"{LITELLM_KEY_ENV} and load the extension again.",
            file=sys.stderr,
        )


def unload_ipython_extension(ipython) -> None:
    try:
        import jupyter_ai_magic_commands
    except ImportError:
        return
    jupyter_ai_magic_commands.unload_ipython_extension(ipython)
