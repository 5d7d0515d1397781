"""Write a tiny random-weight llama-architecture GGUF for end-to-end tests.

Why this exists: the gateway's e2e tests need a *real* llama.cpp ``llama-server``
serving a *real* GGUF model, but this environment can reach package registries
only -- no model weights can be downloaded from a model hub.  llama.cpp's source
tree (vendored in the llama-cpp-python sdist on PyPI) ships vocab-only GGUF files
(``models/ggml-vocab-*.gguf``: tokenizer metadata, no tensors).  This script
copies the tokenizer from one of those files, adds a ChatML chat template, and
fills a small llama model with seeded random weights using the PyPI ``gguf``
package.  The output is nonsense text, but it exercises the real engine: the real
tokenizer, chat templating, prefill/decode, batching over parallel slots, SSE
streaming, usage accounting, ``/slots``, ``/metrics`` and ``/v1/embeddings``.

Generation never ends on its own: the weights are shaped so every non-normal
token (control tokens such as ``</s>``, plus byte-fallback tokens) gets a logit
far below every normal token.  A completion therefore always runs to
``max_tokens`` -- or to the slot's context size -- with ``finish_reason ==
"length"``, and its text is whole word pieces (valid UTF-8, no lone bytes), which
makes token counts and durations predictable.  Sampling among normal tokens is
close to uniform, so the text is random multilingual word salad.  To get
``finish_reason == "stop"``: ``"logit_bias": {"2": 1000}`` (token 2 is ``</s>``)
stops at the first token with empty content, and a one-letter ``stop`` string
such as ``"e"`` stops within a few tokens.

Sizes (``--size``), measured with llama-server 0.3.36's vendored llama.cpp on 2
cores (AVX2), 4 slots, a ~70-token prompt and 64 generated tokens, streamed:

* ``small`` -- n_embd 64, 2 layers, ~9 MiB: ~2000 tok/s decode alone, ~800 tok/s
  per stream with 4 at once; a 64-token stream takes ~35 ms (~90 ms with 4).
* ``large`` -- n_embd 768, 8 layers (12 heads, 4 KV heads, FFN 2048), ~190 MiB:
  ~1000 tok/s prefill, ~110 tok/s decode alone, ~60 tok/s per stream with 4 at
  once; a 64-token stream takes ~0.62 s alone (~1.2 CPU-s) and ~1.25 s with 4
  concurrent.  For drain / disconnect / load tests.

Embeddings (``--embeddings --pooling mean``) work, but the "sign" channel that
keeps EOS away dominates the hidden state, so any two inputs have cosine
similarity close to 1.  They are fine for shape/plumbing tests, not similarity.

Idempotent: the parameters (size config, seed, format version, vocab file hash)
are hashed and stored in the GGUF under ``lanegate.tiny_model.params_sha256``;
if ``--out`` already holds a file with the same hash, the script exits at once.
Files are written to a temporary name and renamed into place.

Usage::

    python make_tiny_model.py --vocab ggml-vocab-llama-spm.gguf --out tiny.gguf --size small
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:
    import gguf
    import numpy as np
except ImportError:  # pragma: no cover - only without the dev extra
    sys.exit("make_tiny_model.py needs the 'gguf' and 'numpy' packages: pip install gguf")

# Bump when the way weights or metadata are produced changes, so cached models
# made by an older version of this script are regenerated.
FORMAT_VERSION = 2

PARAMS_HASH_KEY = "lanegate.tiny_model.params_sha256"
PARAMS_JSON_KEY = "lanegate.tiny_model.params"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# llama.cpp token types (tokenizer.ggml.token_type); only NORMAL may be sampled.
TOKEN_TYPE_NORMAL = 1


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the random llama model."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int
    seed: int = 1234
    # Magnitude of the embedding's "sign" dimension (see module docstring).
    sign_magnitude: float = 8.0
    weight_std: float = 0.02
    embd_std: float = 0.05
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5


SIZES: dict[str, ModelConfig] = {
    "small": ModelConfig(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=192, n_ctx_train=4096),
    "large": ModelConfig(
        n_embd=768, n_layer=8, n_head=12, n_head_kv=4, n_ff=2048, n_ctx_train=4096
    ),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def params_digest(size: str, cfg: ModelConfig, vocab_sha256: str) -> tuple[str, str]:
    """Return (json, sha256) describing everything that determines the output."""
    params = {
        "format_version": FORMAT_VERSION,
        "size": size,
        "config": asdict(cfg),
        "vocab_sha256": vocab_sha256,
        "chat_template": CHATML_TEMPLATE,
    }
    text = json.dumps(params, sort_keys=True)
    return text, hashlib.sha256(text.encode()).hexdigest()


def is_up_to_date(path: Path, digest: str) -> bool:
    """True if ``path`` is a GGUF written by us with the same params hash.

    The hash KV is written first, so it sits in the first few hundred bytes;
    reading them directly avoids importing gguf/numpy and parsing the 32k-entry
    vocab arrays (which GGUFReader does slowly, in Python), keeping the no-op path
    well under a second.  Files are renamed
    into place only when complete, so a present file is a whole file.
    """
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if not head.startswith(b"GGUF"):
        return False
    key = PARAMS_HASH_KEY.encode()
    pos = head.find(key)
    if pos < 0:
        return False
    # key, then u32 value type (8 = string), u64 length, then the string bytes.
    value_at = pos + len(key) + 4 + 8
    return head[value_at : value_at + len(digest)] == digest.encode()


def copy_tokenizer(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> tuple[int, np.ndarray]:
    """Copy every ``tokenizer.*`` KV field; return (vocab size, token types)."""
    n_vocab = 0
    token_types: np.ndarray | None = None
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        vtype = field.types[0]
        value: Any = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, vtype)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
        elif key == "tokenizer.ggml.token_type":
            token_types = np.asarray(value, dtype=np.int32)
    if n_vocab == 0:
        raise SystemExit("vocab file has no tokenizer.ggml.tokens")
    if token_types is None:
        token_types = np.full(n_vocab, TOKEN_TYPE_NORMAL, dtype=np.int32)
    return n_vocab, token_types


def build_tensors(cfg: ModelConfig, n_vocab: int, token_types: np.ndarray) -> dict[str, np.ndarray]:
    """Seeded random llama weights (numpy shapes are ggml shapes reversed)."""
    rng = np.random.default_rng(cfg.seed)
    head_dim = cfg.n_embd // cfg.n_head
    n_embd_kv = head_dim * cfg.n_head_kv

    def mat(rows: int, cols: int, std: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    # Dimension 0 is a "sign" channel.  Every token embedding has +M there, so
    # the residual stream keeps a large positive dim 0 through the small random
    # layers whatever the input (including byte tokens such as "\n", which end
    # the ChatML generation prompt).  The untied output head has +M in column 0
    # for normal tokens and -M for control/byte/unknown tokens, so the latter
    # get logits ~2*M*|h0| below every normal token and are never sampled.
    normal = token_types == TOKEN_TYPE_NORMAL
    embd = rng.standard_normal((n_vocab, cfg.n_embd), dtype=np.float32) * cfg.embd_std
    embd[:, 0] = cfg.sign_magnitude
    output = rng.standard_normal((n_vocab, cfg.n_embd), dtype=np.float32) * cfg.embd_std
    output[:, 0] = np.where(normal, cfg.sign_magnitude, -cfg.sign_magnitude)

    tensors: dict[str, np.ndarray] = {
        "token_embd.weight": embd.astype(np.float16),
        "output_norm.weight": ones(cfg.n_embd),
        "output.weight": output.astype(np.float16),
    }
    std = cfg.weight_std
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        tensors[p + "attn_norm.weight"] = ones(cfg.n_embd)
        tensors[p + "attn_q.weight"] = mat(cfg.n_embd, cfg.n_embd, std)
        tensors[p + "attn_k.weight"] = mat(n_embd_kv, cfg.n_embd, std)
        tensors[p + "attn_v.weight"] = mat(n_embd_kv, cfg.n_embd, std)
        tensors[p + "attn_output.weight"] = mat(cfg.n_embd, cfg.n_embd, std)
        tensors[p + "ffn_norm.weight"] = ones(cfg.n_embd)
        tensors[p + "ffn_gate.weight"] = mat(cfg.n_ff, cfg.n_embd, std)
        tensors[p + "ffn_up.weight"] = mat(cfg.n_ff, cfg.n_embd, std)
        tensors[p + "ffn_down.weight"] = mat(cfg.n_embd, cfg.n_ff, std)
    return tensors


def write_model(vocab: Path, out: Path, size: str, force: bool = False) -> bool:
    """Write the model; return False if an identical one was already there."""
    cfg = SIZES[size]
    if cfg.n_embd % cfg.n_head or cfg.n_head % cfg.n_head_kv:
        raise SystemExit(f"bad head configuration for size {size!r}")
    params_json, digest = params_digest(size, cfg, sha256_file(vocab))
    if not force and is_up_to_date(out, digest):
        return False
    reader = gguf.GGUFReader(vocab, "r")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        writer.add_name(f"lanegate-tiny-llama-{size}")
        writer.add_string(PARAMS_HASH_KEY, digest)
        writer.add_string(PARAMS_JSON_KEY, params_json)
        writer.add_context_length(cfg.n_ctx_train)
        writer.add_embedding_length(cfg.n_embd)
        writer.add_block_count(cfg.n_layer)
        writer.add_feed_forward_length(cfg.n_ff)
        writer.add_head_count(cfg.n_head)
        writer.add_head_count_kv(cfg.n_head_kv)
        writer.add_rope_dimension_count(cfg.n_embd // cfg.n_head)
        writer.add_rope_freq_base(cfg.rope_freq_base)
        writer.add_layer_norm_rms_eps(cfg.rms_eps)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

        n_vocab, token_types = copy_tokenizer(reader, writer)
        writer.add_vocab_size(n_vocab)
        writer.add_chat_template(CHATML_TEMPLATE)

        for name, tensor in build_tensors(cfg, n_vocab, token_types).items():
            writer.add_tensor(name, tensor)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=Path, required=True, help="llama.cpp vocab-only GGUF")
    parser.add_argument("--out", type=Path, required=True, help="output GGUF path")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--force", action="store_true", help="rewrite even if up to date")
    args = parser.parse_args(argv)

    if not args.vocab.is_file():
        parser.error(f"vocab file not found: {args.vocab}")
    start = time.monotonic()
    wrote = write_model(args.vocab, args.out, args.size, force=args.force)
    elapsed = time.monotonic() - start
    if wrote:
        mib = args.out.stat().st_size / (1 << 20)
        print(f"wrote {args.out} ({args.size}, {mib:.1f} MiB) in {elapsed:.1f}s", file=sys.stderr)
    else:
        print(f"{args.out} is up to date ({args.size})", file=sys.stderr)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
