"""JupyterHub configuration helpers: wire every user's server to the gateway.

In ``jupyterhub_config.py`` (or the Helm chart's ``hub.extraConfig``)::

    from akko_jupyter_llm.hub import UserKeys, configure_spawner

    configure_spawner(
        c,
        upstream_url="http://akko-akko-litellm:4000/v1",
        groups={"data-engineering": {"chat_model": "qwen2.5-coder:7b"}},
        user_keys=UserKeys(max_budget=5.0, budget_duration="30d", rpm_limit=60),
    )

- `configure_spawner` (in `.spawner`) sets each user's environment at spawn.
- `UserKeys` and `HubConfigError` (in `.options`) are its settings and its error.
- `.gateway_keys` mints and revokes per-user LiteLLM keys with the master key.

These modules import only the standard library (and tornado, which JupyterHub
depends on, when a key is minted), so the Hub needs neither jupyter_server nor
jupyter-ai: ``pip install --no-deps akko-jupyter-llm`` in the Hub image is enough.
"""

from __future__ import annotations

from .gateway_keys import GatewayKeyError
from .options import HubConfigError, ModelChoice, UserKeys
from .spawner import SpawnerSetup, configure_spawner

__all__ = [
    "GatewayKeyError",
    "HubConfigError",
    "ModelChoice",
    "SpawnerSetup",
    "UserKeys",
    "configure_spawner",
]
