"""Reading the gateway's model list at start and then periodically, for jupyter-ai.

`ModelListRefresh` is the part that the jupyter-ai 2.x and 3.x set-ups share:
it reads ``GET models`` through this server's endpoint into `CATALOG` once the
server listens and every ``models_refresh_interval`` seconds, never delaying
the server's start. A failed read logs one warning, then debug lines until a
read works again, and the default models stay on offer meanwhile.

A subclass says what offers the defaults (`fallback_description`) and reacts
to each new list (`on_models`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tornado.ioloop import PeriodicCallback

from .kernel_env import server_endpoint
from .model_catalog import (
    CATALOG,
    ModelListError,
    fetch_models_async,
    set_server_endpoint,
)


class ModelListRefresh:
    """The background refresh of `CATALOG`; see the module docstring."""

    # Set by the subclass: `models_timeout` and `models_refresh_interval` in seconds.
    settings: Any
    log: logging.Logger

    def _init_refresh(self) -> None:
        self._refresh: PeriodicCallback | None = None
        self._task: asyncio.Task | None = None
        self._list_failing = False

    def fallback_description(self) -> str:
        """Return who offers which default models while the list cannot be read."""
        raise NotImplementedError

    def on_models(self, chat_models: list[str], embedding_models: list[str]) -> None:
        """React to a newly read model list (already stored in `CATALOG`)."""

    def register_endpoint(self, serverapp, client: str) -> tuple[str, str] | None:
        """Point ``client`` at this server's endpoint; return ``(url, token)``.

        Returns None, after a warning, when the server listens on a Unix socket.
        """
        endpoint = server_endpoint(serverapp)
        if endpoint is None:
            self.log.warning(
                "akko-llm: this server listens on a Unix socket, so %s cannot "
                "reach its model endpoint",
                client,
            )
            return None
        set_server_endpoint(*endpoint)
        return endpoint

    def start_refresh(self) -> None:
        """Read the list now in the background, then every refresh interval."""
        self._task = asyncio.ensure_future(self.refresh_models())
        interval = self.settings.models_refresh_interval
        if interval > 0:
            self._refresh = PeriodicCallback(self._schedule_refresh, interval * 1000)
            self._refresh.start()

    def _schedule_refresh(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.refresh_models())

    async def refresh_models(self) -> bool:
        """Read the gateway's models into `CATALOG`; return whether it worked."""
        started = time.perf_counter()
        try:
            chat_models, embedding_models = await fetch_models_async(
                self.settings.models_timeout
            )
        except (ModelListError, RuntimeError) as error:
            if not self._list_failing:
                self.log.warning(
                    "akko-llm: cannot read the gateway's models, so %s until the "
                    "next try in %g s: %s",
                    self.fallback_description(),
                    self.settings.models_refresh_interval,
                    error,
                )
            else:
                self.log.debug("akko-llm: the model list is still unavailable: %s", error)
            self._list_failing = True
            return False

        self._list_failing = False
        CATALOG.update(chat_models, embedding_models)
        self.log.info(
            "akko-llm: the gateway serves chat models %s and embedding models %s "
            "(read in %.0f ms)",
            ", ".join(chat_models) or "(none)",
            ", ".join(embedding_models) or "(none)",
            (time.perf_counter() - started) * 1000,
        )
        self.on_models(chat_models, embedding_models)
        return True

    async def stop_refresh(self) -> None:
        """Stop the periodic refresh and cancel a read in progress."""
        if self._refresh is not None:
            self._refresh.stop()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
