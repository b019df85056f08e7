"""The IPython extension ``%load_ext akko_jupyter_llm``: jupyter-ai's magics on the platform's models.

Loading it in a kernel started by a Jupyter server with this package:

- loads jupyter-ai's ``%%ai`` and ``%ai`` magics (jupyter-ai 2.x; with
  jupyter-ai 3.x, `jupyter_ai3_magics` does the same for its magics);
- reads the gateway's models through the server's ``akko-llm/v1`` endpoint, so
  ``%ai list akko`` shows them (the configured defaults when it cannot);
- makes ``%%ai`` without a model id use the spawner's default chat model
  (``JUPYTER_AI_DEFAULT_PROVIDER``, ``JUPYTER_AI_DEFAULT_MODEL``), unless
  ``c.AiMagics.default_language_model`` is set in the IPython config;
- adds aliases: ``chat`` (the default chat model), ``coder`` (the completions
  model, ``AKKO_LLM_COMPLETIONS_MODEL``), and each served chat model by its
  gateway id, so ``%%ai qwen2.5:3b`` means ``%%ai akko:qwen2.5:3b``.

``python -m akko_jupyter_llm.magics install`` writes an IPython startup file
that loads the extension in every kernel of the user (``uninstall`` removes it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .defaults import (
    CHAT_MODEL_ENV,
    COMPLETIONS_MODEL_ENV,
    DEFAULT_CHAT_MODEL,
    DEFAULT_COMPLETIONS_MODEL,
    DEFAULT_EMBEDDINGS_MODEL,
    EMBEDDINGS_MODEL_ENV,
)
from .model_catalog import CATALOG, ModelListError, fetch_models

PROVIDER_ID = "akko"
# Seconds a kernel waits for the model list when the extension loads.
MODELS_TIMEOUT = 5.0
STARTUP_FILE_NAME = "50-akko-llm.py"
STARTUP_FILE_TEXT = '''\
# Written by `python -m akko_jupyter_llm.magics install`; remove it with
# `python -m akko_jupyter_llm.magics uninstall`. Loads jupyter-ai's %%ai magics
# with the platform's models in every IPython kernel.
try:
    get_ipython().run_line_magic("load_ext", "akko_jupyter_llm")
except Exception as error:
    print(f"akko_jupyter_llm: the %%ai magics are not available: {error}")
'''


def _env_text(name: str, fallback: str) -> str:
    return os.environ.get(name, "").strip() or fallback


def default_chat_model_id() -> str:
    """Return the spawner's default chat model as ``provider:model``."""
    provider = _env_text("JUPYTER_AI_DEFAULT_PROVIDER", PROVIDER_ID)
    model = _env_text(CHAT_MODEL_ENV, DEFAULT_CHAT_MODEL)
    if model.startswith(f"{provider}:"):
        return model
    return f"{provider}:{model}"


def _strip_akko(model_id: str) -> str:
    prefix = f"{PROVIDER_ID}:"
    return model_id[len(prefix) :] if model_id.startswith(prefix) else model_id


def _read_models() -> str | None:
    """Fill the providers' model lists; return a warning when the gateway's list is unavailable."""
    completions = _strip_akko(_env_text(COMPLETIONS_MODEL_ENV, DEFAULT_COMPLETIONS_MODEL))
    embeddings = _strip_akko(_env_text(EMBEDDINGS_MODEL_ENV, DEFAULT_EMBEDDINGS_MODEL))
    chat = default_chat_model_id()
    fallback_chat = [_strip_akko(chat)] if chat.startswith(f"{PROVIDER_ID}:") else []
    CATALOG.set_fallback([*fallback_chat, completions], [embeddings])
    try:
        chat_models, embedding_models = fetch_models(MODELS_TIMEOUT)
    except (ModelListError, RuntimeError) as error:
        return (
            f"akko_jupyter_llm: cannot read the gateway's models, so %ai list "
            f"shows the default models only: {error}"
        )
    CATALOG.update(chat_models, embedding_models)
    return None


def _find_ai_magics(ipython) -> Any:
    return ipython.magics_manager.registry.get("AiMagics")


def jupyter_ai_major_version() -> int | None:
    """Return the major version of the installed jupyter-ai, or None without it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("jupyter-ai").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return None


def load_ipython_extension(ipython) -> None:
    """Load jupyter-ai's magics and point them at the platform's models."""
    if (jupyter_ai_major_version() or 0) >= 3:
        from .jupyter_ai3_magics import load_ipython_extension as load_jupyter_ai3

        load_jupyter_ai3(ipython)
        return
    try:
        import jupyter_ai_magics
    except ImportError:
        print(
            "akko_jupyter_llm: jupyter-ai is not installed, so %%ai is not "
            "available. Install it with: pip install 'akko-jupyter-llm[jupyter-ai]'",
            file=sys.stderr,
        )
        return

    warning = _read_models()
    if warning:
        print(warning, file=sys.stderr)

    if _find_ai_magics(ipython) is None:
        jupyter_ai_magics.load_ipython_extension(ipython)
    magics = _find_ai_magics(ipython)

    configured = ipython.config.get("AiMagics", {})
    default_id = default_chat_model_id()
    if "default_language_model" not in configured:
        magics.default_language_model = default_id

    completions = _strip_akko(_env_text(COMPLETIONS_MODEL_ENV, DEFAULT_COMPLETIONS_MODEL))
    aliases = {model: f"{PROVIDER_ID}:{model}" for model in CATALOG.chat_models}
    aliases["chat"] = default_id
    aliases["coder"] = f"{PROVIDER_ID}:{completions}"
    # A new dict, because the registry starts as jupyter-ai's module-level aliases.
    registry = dict(magics.custom_model_registry)
    for name, model_id in aliases.items():
        registry.setdefault(name, model_id)
    magics.custom_model_registry = registry


def unload_ipython_extension(ipython) -> None:
    if (jupyter_ai_major_version() or 0) >= 3:
        from .jupyter_ai3_magics import unload_ipython_extension as unload_jupyter_ai3

        unload_jupyter_ai3(ipython)
        return
    try:
        import jupyter_ai_magics
    except ImportError:
        return
    jupyter_ai_magics.unload_ipython_extension(ipython)


# ------------------------------------------------------------------ install


def startup_file(ipython_dir: str | None, profile: str) -> Path:
    """Return the path of the startup file in ``ipython_dir`` (IPython's own by default)."""
    if ipython_dir is None:
        from IPython.paths import get_ipython_dir

        ipython_dir = get_ipython_dir()
    return Path(ipython_dir) / f"profile_{profile}" / "startup" / STARTUP_FILE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m akko_jupyter_llm.magics",
        description="Load the %%ai magics with the platform's models in every "
        "IPython kernel, through an IPython startup file.",
    )
    parser.add_argument("action", choices=["install", "uninstall"])
    parser.add_argument(
        "--ipython-dir",
        help="IPython directory (default: $IPYTHONDIR or ~/.ipython)",
    )
    parser.add_argument("--profile", default="default", help="IPython profile")
    args = parser.parse_args(argv)

    path = startup_file(args.ipython_dir, args.profile)
    if args.action == "install":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STARTUP_FILE_TEXT, encoding="utf-8")
        print(f"Wrote {path}; new IPython kernels load akko_jupyter_llm.")
    elif path.exists():
        path.unlink()
        print(f"Removed {path}.")
    else:
        print(f"Nothing to remove: {path} does not exist.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
