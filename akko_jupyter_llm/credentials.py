"""The gateway key: where it comes from, and re-reading it when its file changes.

`GatewayKey` contains either a literal key (``AkkoLLM.api_key``) or the path of a
file that contains it (``AkkoLLM.api_key_file``, usually a Kubernetes secret
mounted as a volume). The file is checked for changes at most once a second and
read again when its modification time, inode or size changes, so a rotated
secret takes effect without a restart. Kubernetes swaps a ``..data`` symlink on
rotation; `os.stat` follows it, so the change is seen.

A key is sent in an HTTP header, so it may contain only visible ASCII
characters. A key with anything else in it (a line break, a space, another
control character or a non-ASCII character) is rejected with `KeyUnavailable`,
whichever setting it comes from.

The key never appears in a message: `describe_source` names where it comes from,
and an invalid character is described by its position and kind only.
"""

from __future__ import annotations

import logging
import os
import time

from .config import setting_name

# Interval, in seconds, between two checks of the key file for changes.
KEY_FILE_CHECK_INTERVAL = 1.0

# The key file's setting, as its errors name it. The ``akko-llm`` command
# replaces this text with the flag or variable that gave it the path.
KEY_FILE_SETTING = "c.AkkoLLM.api_key_file, AKKO_LLM_API_KEY_FILE"


# How to re-create a key file that contains the key alone, for messages.
_KEY_FILE_ADVICE = (
    "Re-create the secret with the key alone, for example with "
    "`kubectl create secret generic <secret> --from-literal=<file name>=\"$KEY\"`, "
    "or write the file with `printf %s \"$KEY\" > <file>`."
)

# Names of the invalid characters that are easy to paste into a key by mistake.
_CHARACTER_NAMES = {
    "\n": "a line break (LF)",
    "\r": "a carriage return (CR)",
    "\t": "a tab",
    " ": "a space",
    "\ufeff": "a byte order mark (U+FEFF)",
}


class KeyUnavailable(Exception):
    """The key cannot be used: its file cannot be read, is empty, or the key is invalid.

    The message names the file or the setting and what to do, never the key.
    """


def describe_invalid_character(key: str) -> str | None:
    """Describe the first character of ``key`` that a header cannot carry, or None.

    The description gives the kind and the 1-based position of the character,
    never the character itself when it could be part of a real key.
    """
    for position, character in enumerate(key, 1):
        if "!" <= character <= "~":
            continue
        name = _CHARACTER_NAMES.get(character)
        if name is None and ord(character) < 0x80:
            name = f"a control character (U+{ord(character):04X})"
        if name is None:
            # A non-ASCII letter could be part of the key, so only its kind is named.
            name = "a non-ASCII character"
        return f"{name} at character {position} of the key"
    return None


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
        # The literal key is checked once: it cannot change while the process runs.
        self._literal_error = self._check_literal() if not self._path else None

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
            if self._literal_error:
                raise KeyUnavailable(self._literal_error)
            return self._literal

        now = time.monotonic()
        if now - self._checked_at >= KEY_FILE_CHECK_INTERVAL:
            self._checked_at = now
            self._refresh()
        if self._error:
            raise KeyUnavailable(self._error)
        return self._cached_key

    def _check_literal(self) -> str | None:
        """Return the problem with the literal key (and log it), or None."""
        invalid = describe_invalid_character(self._literal)
        if invalid is None:
            return None
        message = (
            f"The gateway key in {setting_name('api_key')} is invalid: it contains "
            f"{invalid}, and a key may contain only visible ASCII characters. Set "
            "it again to the key alone. When the value comes from a Kubernetes "
            "secret, re-create the secret with `kubectl create secret generic "
            "<secret> --from-literal=<entry>=\"$KEY\"`."
        )
        self._log.error(message)
        return message

    def _refresh(self) -> None:
        try:
            stat = os.stat(self._path)
            signature = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
            if signature == self._cached_stat and self._error is None:
                return
            with open(self._path, "rb") as key_file:
                content = key_file.read()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            self._set_error(
                f"Cannot read the gateway key file {self._path} "
                f"({KEY_FILE_SETTING}): {reason}. "
                "Check that the secret is mounted at that path and that the user "
                "this process runs as can read it.",
                None,
            )
            return

        try:
            key = content.decode("utf-8").strip()
        except UnicodeDecodeError as error:
            self._set_error(
                f"The gateway key file {self._path} ({KEY_FILE_SETTING}) is not "
                f"valid UTF-8 text: byte {error.start + 1} of the file cannot be "
                "decoded. The file must contain the key as plain ASCII text. A "
                "file saved as UTF-16 causes this, and so does a Kubernetes secret "
                "with the key itself under data, which Kubernetes decodes as "
                "base64: put the key under stringData instead. " + _KEY_FILE_ADVICE,
                signature,
            )
            return

        if not key:
            self._set_error(
                f"The gateway key file {self._path} ({KEY_FILE_SETTING}) is empty. "
                "Check the secret it is mounted from.",
                signature,
            )
            return

        invalid = describe_invalid_character(key)
        if invalid is not None:
            self._set_error(
                f"The gateway key in the file {self._path} ({KEY_FILE_SETTING}) is "
                f"invalid: it contains {invalid}, and a key may contain only "
                "visible ASCII characters (a line break at the end of the file is "
                "ignored). " + _KEY_FILE_ADVICE,
                signature,
            )
            return

        if self._cached_stat is not None or self._error is not None:
            self._log.info("Read a new gateway key from %s", self._path)
        self._error = None
        self._cached_key = key
        self._cached_stat = signature

    def _set_error(self, message: str, signature: tuple[int, int, int] | None) -> None:
        """Record why the key file is unusable, logging the message when it is new.

        ``signature`` is the file's stat signature, so that an unchanged file
        is not read again, or None to read it again at the next check.
        """
        if message != self._error:
            self._log.error(message)
        self._error = message
        self._cached_key = ""
        self._cached_stat = signature
