"""Serve a GGUF model with llama.cpp's OpenAI-compatible server, under the platform's names.

Used by scripts/run-lab when no upstream answers, so that JupyterLab with the
extension works end to end on a fresh machine. Without ``--model`` it serves
the tiny random-weight model from scripts/tiny_model.py, which answers
nonsense; pass the path of a real GGUF file (for example a small Qwen2.5
instruct model) for real answers.

    python scripts/serve_model.py --port 8089 [--model PATH.gguf] [--embedding-model PATH.gguf]

``qwen2.5:3b`` and ``qwen2.5-coder:7b`` are both served by ``--model``;
``nomic-embed-text`` by ``--embedding-model`` (default: ``--model``). A chat
model gives one vector per token unless its file sets a pooling type, so serve
a real embedding model there (for example nomic-embed-text in GGUF).
The server listens on 127.0.0.1 only and runs until stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))

from tests.servers.llama import (  # noqa: E402 - after the path set-up above
    CHAT_MODELS,
    CONTEXT_SIZE,
    DEFAULT_MAX_TOKENS,
    EMBEDDING_MODEL,
    write_tiny_model,
)


def write_config(chat_model: Path, embedding_model: Path, port: int, path: Path) -> Path:
    """Write llama_cpp.server's config: the platform's model ids on these files."""
    common = {"n_ctx": CONTEXT_SIZE, "seed": 0, "verbose": False}
    models = [
        {**common, "model": str(chat_model), "model_alias": alias} for alias in CHAT_MODELS
    ]
    models.append(
        {**common, "model": str(embedding_model), "model_alias": EMBEDDING_MODEL,
         "embedding": True}
    )
    config = {
        "host": "127.0.0.1",
        "port": port,
        # By default llama_cpp.server (0.3.36) ends a streamed reply with
        # [DONE] as soon as another request waits for the model, so of 8
        # concurrent streams 7 got no text. Off, the other requests wait.
        "interrupt_requests": False,
        "models": models,
    }
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--model", type=Path, help="GGUF file to serve (default: the tiny model)")
    parser.add_argument(
        "--embedding-model", type=Path, help="GGUF file for nomic-embed-text (default: --model)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPOSITORY_ROOT / ".cache" / "models",
        help="where the tiny model and the server config are written",
    )
    args = parser.parse_args()

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    model_path = args.model
    if model_path is None:
        model_path = write_tiny_model(args.cache_dir / "tiny-llama.gguf")
    elif not model_path.is_file():
        parser.error(f"--model {model_path}: no such file; give the path of a .gguf file")
    embedding_path = args.embedding_model or model_path
    if not embedding_path.is_file():
        parser.error(
            f"--embedding-model {embedding_path}: no such file; give the path of a .gguf file"
        )

    # A real model needs a longer reply limit than the tiny one's default.
    max_tokens = DEFAULT_MAX_TOKENS if args.model is None else 1024
    config_path = write_config(
        model_path.resolve(),
        embedding_path.resolve(),
        args.port,
        args.cache_dir / "llama-server.json",
    )
    os.environ.pop("CONFIG_FILE", None)
    os.chdir(REPOSITORY_ROOT)
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "tests.servers.llama_app",
            "--config_file",
            str(config_path),
            "--default-max-tokens",
            str(max_tokens),
        ],
    )


if __name__ == "__main__":
    main()
