"""Tiny stand-ins for the judge and the embedder that fit the GPU machine's carry (scripts/gpu-carry.sh).

    python scripts/gpu_tiny_models.py OUT_DIR

Writes OUT_DIR/judge-tiny.gguf: a llama-architecture GGUF with the SmolLM2 tokenizer (copied from the test
GGUF's metadata) and two small random layers, which llama.cpp loads and runs like any judge (its YES/NO
decisions are noise; the GPU check measures the trainer, not the judge's accuracy). And OUT_DIR/embed-tiny/:
a one-layer random BERT with the MiniLM tokenizer, exported to ONNX by `medix embed export`'s code.
The real test models stay the source of the tokenizers: nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

N_EMBD, N_FF, N_LAYER, N_HEAD, N_HEAD_KV = 32, 64, 2, 4, 2


def write_judge(src_gguf: Path, out: Path) -> Path:
    import gguf

    r = gguf.GGUFReader(str(src_gguf))
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("medix tiny judge (random weights, SmolLM2 tokenizer)")
    w.add_context_length(2048)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab = 0
    for name, f in r.fields.items():
        if not name.startswith("tokenizer."):
            continue
        types = f.types
        sub = types[1] if len(types) > 1 else None
        w.add_key_value(name, f.contents(), types[0], sub)
        if name == "tokenizer.ggml.tokens":
            vocab = len(f.contents())
    w.add_vocab_size(vocab)
    rng = np.random.default_rng(0)

    def t(name: str, *shape: int, scale: float = 0.02) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float16))

    t("token_embd.weight", vocab, N_EMBD)  # also the output head (tied, as in SmolLM2)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    head = N_EMBD // N_HEAD
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        t(f"blk.{i}.attn_q.weight", N_EMBD, N_EMBD)
        t(f"blk.{i}.attn_k.weight", N_HEAD_KV * head, N_EMBD)
        t(f"blk.{i}.attn_v.weight", N_HEAD_KV * head, N_EMBD)
        t(f"blk.{i}.attn_output.weight", N_EMBD, N_EMBD)
        t(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def write_embedder(minilm_hf: Path, out: Path) -> Path:
    import torch
    from medix_r1.embed.export import export_onnx
    from transformers import BertConfig, BertModel

    src = json.loads((minilm_hf / "config.json").read_text())
    cfg = BertConfig(
        vocab_size=src["vocab_size"],
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=src.get("max_position_embeddings", 512),
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp) / "hf"
        BertModel(cfg).save_pretrained(str(hf))
        for p in minilm_hf.iterdir():  # tokenizer and sentence-transformers pooling files, not the weights
            if p.is_file() and p.suffix in (".json", ".txt") and p.name != "config.json":
                shutil.copy(p, hf / p.name)
            elif p.is_dir() and p.name.startswith("1_Pooling"):
                shutil.copytree(p, hf / p.name)
        shutil.rmtree(out, ignore_errors=True)
        export_onnx(hf, out)
    return out


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".gpu-carry/models").resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = Path(os.environ.get("MEDIX_TEST_MODELS", Path.home() / ".cache/medix-r1/test-models"))
    src = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
    minilm = root / "all-MiniLM-L6-v2"
    for p in (src, minilm):
        if not p.exists():
            print(f"gpu_tiny_models: {p} is missing: run scripts/test-models.sh first", file=sys.stderr)
            return 2
    j = write_judge(src, out / "judge-tiny.gguf")
    e = write_embedder(minilm, out / "embed-tiny")
    print(f"judge {j} ({j.stat().st_size / 2**20:.1f} MiB), embedder {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
