"""Fetch the GGUF models that the Binder image serves, once, at build time.

The chat model is Qwen2.5 0.5B Instruct in 4-bit quantisation (about 400 MB), a
small relative of the platform's models that answers sensibly on a CPU; the
embedding model is nomic-embed-text v1.5 (about 80 MB). The variables
``AKKO_BINDER_MODEL_SOURCE`` and ``AKKO_BINDER_EMBEDDING_MODEL_SOURCE`` replace
them with another URL or a local file; ``AKKO_BINDER_MODEL_DIR`` sets where
they are written (``model.gguf`` and ``embedding-model.gguf``).
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from pathlib import Path

DEFAULT_CHAT_SOURCE = (
    "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/"
    "qwen2.5-0.5b-instruct-q4_k_m.gguf"
)
DEFAULT_EMBEDDING_SOURCE = (
    "https://huggingface.co/nomic-ai/nomic-embed-text-v1.5-GGUF/resolve/main/"
    "nomic-embed-text-v1.5.Q4_K_M.gguf"
)


def model_dir() -> Path:
    configured = os.environ.get("AKKO_BINDER_MODEL_DIR", "").strip()
    return Path(configured) if configured else Path.home() / ".cache" / "akko-llm"


def main() -> None:
    directory = model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    fetch(
        os.environ.get("AKKO_BINDER_MODEL_SOURCE", "").strip() or DEFAULT_CHAT_SOURCE,
        directory / "model.gguf",
        "AKKO_BINDER_MODEL_SOURCE",
    )
    fetch(
        os.environ.get("AKKO_BINDER_EMBEDDING_MODEL_SOURCE", "").strip()
        or DEFAULT_EMBEDDING_SOURCE,
        directory / "embedding-model.gguf",
        "AKKO_BINDER_EMBEDDING_MODEL_SOURCE",
    )


def fetch(source: str, target: Path, variable: str) -> None:
    """Copy or download the GGUF file ``source`` to ``target``."""
    partial = target.with_suffix(".part")

    if source.startswith(("http://", "https://")):
        print(f"Downloading {source} to {target}")
        with urllib.request.urlopen(source, timeout=600) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1024 * 1024)
    else:
        path = Path(source)
        if not path.is_file():
            sys.exit(f"{variable}={source!r} is neither a URL nor an existing file")
        shutil.copyfile(path, partial)

    with open(partial, "rb") as model_file:
        if model_file.read(4) != b"GGUF":
            partial.unlink()
            sys.exit(f"{source} is not a GGUF file (its first bytes are not 'GGUF')")
    partial.replace(target)
    print(f"Model ready: {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
