"""Generate a tiny random-weight llama GGUF model for tests and local development.

The model is a 2-layer llama with width 64 and 4 attention heads. It has a
SentencePiece-style vocabulary of a few hundred tokens, including the 256 byte-fallback
tokens, a ChatML chat template and mean pooling. One file therefore serves chat, completions
and embeddings in llama-cpp-python. The file is about 570 kB and, because the seed is fixed,
identical on every run.

With random weights alone, replies contain control characters from the byte-fallback
tokens and may end at any token. One residual channel (``CONSTANT_CHANNEL``) therefore
carries a constant value through every layer, and the output projection uses it to push
byte, control and end-of-sequence tokens far down and to favour word tokens. Greedy replies are printable text, deterministic at temperature 0, and
never stop before ``max_tokens`` or the context size.

Usage: python scripts/tiny_model.py OUT.gguf
"""

from __future__ import annotations

import argparse
import os
import string
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

ARCHITECTURE = "llama"
BLOCK_COUNT = 2
EMBEDDING_LENGTH = 64
HEAD_COUNT = 4
FEED_FORWARD_LENGTH = 128
CONTEXT_LENGTH = 4096
RMS_NORM_EPSILON = 1e-5
SEED = 20240229

# Residual channel that stays constant through the layers (see the module docstring).
CONSTANT_CHANNEL = 0
CONSTANT_VALUE = 8.0
# Output weights on the constant channel: large negative for tokens that must never be
# generated, small positive for tokens that start a word.
SUPPRESSED_TOKEN_WEIGHT = -12.0
WORD_TOKEN_WEIGHT = 1.0

# SentencePiece marks a preceding space with U+2581.
SPACE_MARK = "\u2581"

UNKNOWN_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"

WORDS = (
    "the a an and or of to in on for with is are was be it this that as at by from "
    "not all can will use data table query model lake user code answer question "
    "result value row column schema catalog join count sum select where group order "
    "hello world test chat token vector text file name time date number list map "
    "python notebook kernel server cluster gateway request response stream key "
    "report sales customer order product price region month year total average"
).split()
SUFFIXES = ("s", "ed", "ing", "er", "ly", "tion")
PUNCTUATION = ".,;:!?'\"-()"

# ChatML, as used by the Qwen 2.5 models whose names the test servers serve.
# Message content may be a string or a list of OpenAI content parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Return the token texts, SentencePiece scores and token types of the vocabulary.

    Ids 0 to 4 are the unknown, control and end tokens, ids 5 to 260 the byte-fallback
    tokens ``<0x00>`` to ``<0xFF>``, and the rest normal text pieces. A higher score makes
    the tokenizer merge a piece earlier, so longer pieces get higher scores.
    """
    tokens = [UNKNOWN_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START_TOKEN, IM_END_TOKEN]
    types = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(gguf.TokenType.BYTE)

    pieces = [SPACE_MARK]
    pieces += list(string.ascii_lowercase + string.ascii_uppercase + string.digits)
    pieces += list(PUNCTUATION)
    pieces += [SPACE_MARK + letter for letter in string.ascii_lowercase]
    pieces += [SPACE_MARK + word for word in WORDS]
    pieces += list(SUFFIXES)
    seen = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)

    scores = [0.0] * len(tokens)
    for token_id, (token, token_type) in enumerate(zip(tokens, types)):
        if token_type == gguf.TokenType.NORMAL:
            scores[token_id] = float(len(token)) - token_id / 10_000
    return tokens, scores, [int(token_type) for token_type in types]


def build_tensors(
    tokens: list[str], types: list[int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Return the model's float32 weights by GGUF tensor name.

    Arrays use PyTorch's layout (a linear layer is ``(out_features, in_features)``), which
    GGUFWriter stores with the dimensions reversed as llama.cpp expects.
    """
    width = EMBEDDING_LENGTH
    vocab_size = len(tokens)

    def random_matrix(rows: int, columns: int, scale: float) -> np.ndarray:
        return rng.normal(0.0, scale, size=(rows, columns)).astype(np.float32)

    # Unit-variance layers fall into repeating one token within a few dozen tokens. Larger
    # query, key, gate and up projections keep greedy replies varied.
    projection_scale = 3.0 * width**-0.5

    tensors: dict[str, np.ndarray] = {}
    token_embedding = random_matrix(vocab_size, width, 1.0)
    token_embedding[:, CONSTANT_CHANNEL] = CONSTANT_VALUE
    tensors["token_embd.weight"] = token_embedding

    for block in range(BLOCK_COUNT):
        prefix = f"blk.{block}"
        layers = {
            "attn_q": random_matrix(width, width, projection_scale),
            "attn_k": random_matrix(width, width, projection_scale),
            "attn_v": random_matrix(width, width, width**-0.5),
            "attn_output": random_matrix(width, width, width**-0.5),
            "ffn_gate": random_matrix(FEED_FORWARD_LENGTH, width, projection_scale),
            "ffn_up": random_matrix(FEED_FORWARD_LENGTH, width, projection_scale),
            "ffn_down": random_matrix(width, FEED_FORWARD_LENGTH, FEED_FORWARD_LENGTH**-0.5),
        }
        # The constant channel neither feeds the layers nor receives their output, so
        # it reaches the output projection unchanged.
        for name in ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up"):
            layers[name][:, CONSTANT_CHANNEL] = 0.0
        for name in ("attn_output", "ffn_down"):
            layers[name][CONSTANT_CHANNEL, :] = 0.0
        for name, weight in layers.items():
            tensors[f"{prefix}.{name}.weight"] = weight
        tensors[f"{prefix}.attn_norm.weight"] = np.ones(width, dtype=np.float32)
        tensors[f"{prefix}.ffn_norm.weight"] = np.ones(width, dtype=np.float32)

    tensors["output_norm.weight"] = np.ones(width, dtype=np.float32)
    output = random_matrix(vocab_size, width, 0.5)
    for token_id, (token, token_type) in enumerate(zip(tokens, types)):
        if token_type != gguf.TokenType.NORMAL:
            output[token_id, CONSTANT_CHANNEL] = SUPPRESSED_TOKEN_WEIGHT
        elif token.startswith(SPACE_MARK) and len(token) > 1:
            output[token_id, CONSTANT_CHANNEL] = WORD_TOKEN_WEIGHT
        else:
            output[token_id, CONSTANT_CHANNEL] = 0.0
    tensors["output.weight"] = output
    return tensors


def write_tiny_model(path: str | os.PathLike[str]) -> Path:
    """Write the tiny model to ``path`` and return the path.

    The file is written under a temporary name and renamed, so concurrent callers and
    readers never see a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = build_vocabulary()
    tensors = build_tensors(tokens, types, np.random.default_rng(SEED))

    file_descriptor, temporary_name = tempfile.mkstemp(
        prefix=path.name + ".", suffix=".partial", dir=path.parent
    )
    os.close(file_descriptor)
    try:
        writer = gguf.GGUFWriter(temporary_name, ARCHITECTURE)
        writer.add_name("akko-tiny-test-model")
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(EMBEDDING_LENGTH)
        writer.add_block_count(BLOCK_COUNT)
        writer.add_feed_forward_length(FEED_FORWARD_LENGTH)
        writer.add_head_count(HEAD_COUNT)
        writer.add_head_count_kv(HEAD_COUNT)
        writer.add_rope_dimension_count(EMBEDDING_LENGTH // HEAD_COUNT)
        writer.add_layer_norm_rms_eps(RMS_NORM_EPSILON)
        writer.add_vocab_size(len(tokens))
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_pooling_type(gguf.PoolingType.MEAN)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(tokens.index(UNKNOWN_TOKEN))
        writer.add_bos_token_id(tokens.index(BOS_TOKEN))
        writer.add_eos_token_id(tokens.index(IM_END_TOKEN))
        writer.add_add_bos_token(False)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(True)
        writer.add_chat_template(CHAT_TEMPLATE)

        for name, tensor in tensors.items():
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(temporary_name, 0o644)
        os.replace(temporary_name, path)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="path of the GGUF file to write")
    arguments = parser.parse_args(argv)
    path = write_tiny_model(arguments.output)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
