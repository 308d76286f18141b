"""Turn a GGUF model into a plain transformers checkpoint (weights + tokenizer) that can be trained.

transformers dequantises a GGUF into a torch model but refuses to train one loaded that way, so the training
policy is converted once and cached (``~/.cache/medix-r1/policies/<name>/`` by default).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medix_r1._fsutil import atomic_dir
from medix_r1.errors import check_model_path

__all__ = ["default_policy_cache", "gguf_to_checkpoint", "is_checkpoint", "plain_byte_level"]

_MARKER = "medix_converted.json"
_FORMAT = 3  # bump when the conversion changes, so cached checkpoints are redone


def default_policy_cache() -> Path:
    root = os.environ.get("MEDIX_CACHE", str(Path.home() / ".cache" / "medix-r1"))
    return Path(root).expanduser() / "policies"


def is_checkpoint(path: str | Path) -> bool:
    """True where ``path`` is a directory transformers can load (config.json plus weights)."""
    p = Path(path)
    if not (p / "config.json").is_file():
        return False
    return (
        any(p.glob("*.safetensors")) or any(p.glob("*.bin")) or (p / "model.safetensors.index.json").exists()
    )


def plain_byte_level(tokenizer_json: str | Path) -> bool:
    """Make a byte-level BPE ``tokenizer.json`` that also claims SentencePiece byte fallback plain byte-level.

    transformers' GGUF reader writes GPT-2-style byte-level BPE tokenizers (SmolLM2's, a "llama" GGUF) with
    ``byte_fallback`` and SentencePiece's decoder steps (ByteFallback, Fuse, Replace U+2581). Byte-level BPE
    covers every byte, so none of them ever acts and the tokenizer behaves the same without them; but
    llama.cpp's converter reads the flag as "a SentencePiece Llama vocabulary", writes the wrong vocabulary
    type, and llama.cpp aborts at the first tokenization of the exported GGUF. The file is replaced
    atomically; True when it was changed."""
    path = Path(tokenizer_json)
    if not path.is_file():
        return False
    t = json.loads(path.read_text(encoding="utf-8"))
    model, pre = t.get("model") or {}, t.get("pre_tokenizer") or {}
    pres = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    byte_level = [x for x in pres if isinstance(x, dict) and x.get("type") == "ByteLevel"]
    if model.get("type") != "BPE" or not model.get("byte_fallback") or not byte_level:
        return False
    model["byte_fallback"] = False
    t["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(t, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return True


def gguf_to_checkpoint(
    gguf: str | Path, out_dir: str | Path | None = None, *, dtype: str = "float32"
) -> Path:
    """Dequantise ``gguf`` into ``out_dir`` (config, safetensors, tokenizer) once; later calls reuse it.

    The write goes to a sibling temporary directory renamed into place at the end, so an interrupted
    conversion never leaves a half-written checkpoint that a later run would trust.
    """
    src = check_model_path(gguf, "GGUF policy model", "Pass the path of a .gguf file")
    out = Path(out_dir) if out_dir is not None else default_policy_cache() / src.stem
    out = out.expanduser()
    marker = out / _MARKER
    if marker.is_file() and is_checkpoint(out):
        info = json.loads(marker.read_text())
        if (info.get("source"), info.get("size"), info.get("format")) == (
            str(src),
            src.stat().st_size,
            _FORMAT,
        ):
            # Checkpoints cached before the conversion wrote a plain byte-level tokenizer get it now (the
            # same tokenizer behaviour, so the format number stays and nothing is converted again).
            plain_byte_level(out / "tokenizer.json")
            return out

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(out) as tmp:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(src.parent), gguf_file=src.name, dtype=getattr(torch, dtype), low_cpu_mem_usage=True
        )
        # Some GGUF tokenizers come back with the wrong special tokens (SmolLM2's eos reads as
        # <|im_start|>); the model config's eos id is the one the chat template ends a turn with, so it wins.
        eos_id = model.config.eos_token_id
        eos_id = eos_id[0] if isinstance(eos_id, list) else eos_id
        if isinstance(eos_id, int) and 0 <= eos_id < len(tok) and tok.eos_token_id != eos_id:
            tok.eos_token = tok.convert_ids_to_tokens(eos_id)
        if tok.pad_token is None or tok.pad_token_id == tok.bos_token_id:
            tok.pad_token = tok.eos_token
        # GGUF tokenizers are BPE, for which transformers ignores this flag (with a warning at every load).
        tok.clean_up_tokenization_spaces = False
        # The loaded model still carries the GGUF "quantization" marker that save_pretrained refuses;
        # rebuild a plain model from the same config and copy the (already dequantised) weights into it.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
        res = plain.load_state_dict(model.state_dict(), strict=False)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        missing = [k for k in res.missing_keys if not (tied and k.endswith("lm_head.weight"))]
        if missing or res.unexpected_keys:  # never save a checkpoint with weights silently left random
            raise ValueError(
                f"{src}: converting the GGUF left weights unmatched (missing {missing[:5]}, "
                f"unexpected {list(res.unexpected_keys)[:5]}); this architecture is not supported by the "
                "converter: give a Hugging Face checkpoint directory as model.path instead"
            )
        plain.tie_weights()
        if getattr(model, "generation_config", None) is not None:
            plain.generation_config = model.generation_config
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        plain_byte_level(tmp / "tokenizer.json")
        (tmp / _MARKER).write_text(
            json.dumps({"source": str(src), "size": src.stat().st_size, "dtype": dtype, "format": _FORMAT})
        )
    return out
