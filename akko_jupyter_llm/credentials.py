"""The gateway key: where it comes from, and re-reading it when its file changes.

`GatewayKey` contains either a literal key (``AkkoLLM.api_key``) or the path of a
file that contains it (``AkkoLLM.api_key_file``, usually a Kubernetes secret
mounted as a volume). The file is checked for changes at most once a second and
read again when its modification time, inode or size changes, so a rotated
secret takes effect without a restart. Kubernetes swaps a ``..data`` symlink on
rotation; `os.stat` follows it, so the change is seen.

The key never appears in a message: `describe_source` names where it comes from.
"""

from __future__ import annotations

import logging
import os
import time

# Interval, in seconds, between two checks of the key file for changes.
KEY_FILE_CHECK_INTERVAL = 1.0

# The key file's setting, as its errors name it. The ``akko-llm`` command
# replaces this text with the flag or variable that gave it the path.
KEY_FILE_SETTING = "c.AkkoLLM.api_key_file, AKKO_LLM_API_KEY_FILE"


class KeyUnavailable(Exception):
    """The key file cannot be read; the message names the file and the setting."""


class GatewayKey:
    """The key that the proxy sends to the gateway as ``Authorization: Bearer``."""

    def __init__(self, api_key: str, api_key_file: str, log: logging.Logger) -> None:
        self._literal = api_key.strip()
        self._path = api_key_file.strip()
        self._log = log
        self._cached_key = ""
        self._cached_stat: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")
        self._error: str | None = None

    @property
    def from_file(self) -> bool:
        return bool(self._path)

    def describe_source(self) -> str:
        """Say where the key comes from, for messages and logs (never the key)."""
        if self._path:
            return (
                f"the file {self._path} (AKKO_LLM_API_KEY_FILE, "
                "c.AkkoLLM.api_key_file)"
            )
        if self._literal:
            return "the setting c.AkkoLLM.api_key (AKKO_LLM_API_KEY)"
        return (
            "nowhere: no key is configured (set AKKO_LLM_API_KEY or "
            "AKKO_LLM_API_KEY_FILE, or c.AkkoLLM.api_key or c.AkkoLLM.api_key_file)"
        )

    def invalidate(self) -> None:
        """Force the next `get` to read the key file again (after a rejection)."""
        self._checked_at = float("-inf")
        self._cached_stat = None

    def get(self) -> str:
        """Return the current key ('' when none is configured), or raise `KeyUnavailable`."""
        if not self._path:
            return self._literal

        now = time.monotonic()
        if now - self._checked_at >= KEY_FILE_CHECK_INTERVAL:
            self._checked_at = now
            self._refresh()
        if self._error:
            raise KeyUnavailable(self._error)
        return self._cached_key

    def _refresh(self) -> None:
        try:
            stat = os.stat(self._path)
            signature = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
            if signature == self._cached_stat and self._error is None:
                return
            with open(self._path, encoding="utf-8") as key_file:
                key = key_file.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            message = (
                f"Cannot read the gateway key file {self._path} "
                f"({KEY_FILE_SETTING}): {reason}. "
                "Check that the secret is mounted at that path and readable "
                "by this server's user."
            )
            if message != self._error:
                self._log.error(message)
            self._error = message
            self._cached_stat = None
            return

        if not key:
            message = (
                f"The gateway key file {self._path} ({KEY_FILE_SETTING}) is empty. "
                "Check the secret it is mounted from."
            )
            if message != self._error:
                self._log.error(message)
            self._error = message
            self._cached_stat = signature
            return

        if self._cached_stat is not None or self._error is not None:
            self._log.info("Read a new gateway key from %s", self._path)
        self._error = None
        self._cached_key = key
        self._cached_stat = signature
