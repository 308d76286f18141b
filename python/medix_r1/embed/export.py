"""Export a Hugging Face sentence-embedding checkpoint (BERT-like) to an ONNX directory fastembed loads.

The directory holds ``model.onnx`` (the transformer: ``input_ids``, ``attention_mask`` and, when the model
uses them, ``token_type_ids`` in; ``last_hidden_state`` out; dynamic batch and sequence axes), the tokenizer
files, and ``medix_embed.json``, the manifest with the pooling, normalisation, dimension and maximum length
that the sentence-transformers configuration of the checkpoint declares.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from medix_r1._fsutil import atomic_dir
from medix_r1.errors import DataError, check_model_path

__all__ = ["MANIFEST", "MODEL_FILE", "export_onnx", "read_manifest"]

MANIFEST = "medix_embed.json"
MODEL_FILE = "model.onnx"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "vocab.txt",
)
_HOW_SRC = (
    "Give a local Hugging Face sentence-embedding checkpoint (config.json, model.safetensors, "
    "tokenizer.json), e.g. a copy of abhinand/MedEmbed-large-v0.1 or sentence-transformers/all-MiniLM-L6-v2"
)


_HOW_REEXPORT = "re-export it: `medix embed export --from CHECKPOINT_DIR --to {dir}`"


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The medix manifest of an exported directory, checked (raises FileNotFoundError when there is none,
    DataError naming the file when it is corrupt)."""
    d = Path(model_dir)
    path = d / MANIFEST
    how = _HOW_REEXPORT.format(dir=d)
    try:
        m = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(f"{path}: corrupt embedding manifest, not JSON ({e}); {how}", path=path) from None
    if not isinstance(m, dict):
        raise DataError(f"{path}: corrupt embedding manifest (not a JSON object); {how}", path=path)
    problems = []
    dim = m.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        problems.append(f"dim must be a positive integer, got {dim!r}")
    if m.get("pooling", "mean") not in ("mean", "cls"):
        problems.append(f"pooling must be 'mean' or 'cls', got {m.get('pooling')!r}")
    model_file = m.get("model_file", MODEL_FILE)
    # A bare file name: the manifest must not point the loader outside its own directory.
    if not isinstance(model_file, str) or not model_file or Path(model_file).name != model_file:
        problems.append(f"model_file must be a file name inside {d}, got {model_file!r}")
    if problems:
        raise DataError(f"{path}: corrupt embedding manifest ({'; '.join(problems)}); {how}", path=path)
    return m


def _read_json(path: Path, kind: type = dict) -> Any:
    """The JSON ``kind`` (dict or list) in ``path``; empty when the file is absent or holds another kind."""
    if not path.is_file():
        return kind()
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(
            f"{path}: not valid JSON ({e}); restore the checkpoint's copy of this file", path=path
        ) from None
    return data if isinstance(data, kind) else kind()


def _pooling(src: Path) -> str:
    """``mean`` or ``cls``, from the sentence-transformers pooling module of the checkpoint (mean without one,
    as sentence-transformers itself defaults to)."""
    modules = _read_json(src / "modules.json", list) if (src / "modules.json").is_file() else None
    pool_dir = src / "1_Pooling"
    if isinstance(modules, list):
        for m in modules:
            if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling"):
                pool_dir = src / m.get("path", "1_Pooling")
    cfg = _read_json(pool_dir / "config.json")
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg and not cfg.get("pooling_mode_mean_tokens", True):
        other = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
        raise ValueError(f"{pool_dir / 'config.json'}: unsupported pooling {other}; only mean and cls are")
    return "mean"


def _normalize(src: Path) -> bool:
    modules = _read_json(src / "modules.json", list) if (src / "modules.json").is_file() else None
    if isinstance(modules, list):
        return any(isinstance(m, dict) and str(m.get("type", "")).endswith("Normalize") for m in modules)
    return False


def _max_length(src: Path, config: dict[str, Any]) -> int:
    st = _read_json(src / "sentence_bert_config.json")
    tok = _read_json(src / "tokenizer_config.json")
    candidates = [
        v
        for v in (
            st.get("max_seq_length"),
            tok.get("model_max_length"),
            config.get("max_position_embeddings"),
        )
        if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1_000_000
    ]
    return min(candidates) if candidates else 512


class _Encoder:
    """The transformer with positional inputs and one output, which is what torch.onnx.export traces."""

    @staticmethod
    def wrap(model: Any, use_token_type: bool) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
                kw = {"input_ids": input_ids, "attention_mask": attention_mask}
                if use_token_type:
                    kw["token_type_ids"] = token_type_ids
                return self.model(**kw).last_hidden_state

        return Wrapped().eval()


def export_onnx(
    src_dir: str | Path,
    dst_dir: str | Path,
    *,
    opset: int = 17,
    verify: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Export ``src_dir`` (a Hugging Face sentence-embedding checkpoint) to ``dst_dir``; return ``dst_dir``.

    After the export, ONNX Runtime and torch embed the same sample sentences and must agree within ``atol``
    (on the pooled, normalised embeddings) or a RuntimeError is raised and nothing is left half-written:
    the export goes to a temporary sibling directory that replaces ``dst_dir`` only once verified.
    """
    src = check_model_path(src_dir, "embedding checkpoint to export", _HOW_SRC, directory=True)
    for name in ("config.json", "tokenizer.json"):
        check_model_path(src / name, f"{name} of the embedding checkpoint", _HOW_SRC)
    dst = Path(dst_dir).expanduser().resolve()
    if dst == src:
        raise ValueError("the export directory must differ from the checkpoint directory")

    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    config = _read_json(src / "config.json")
    tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    model = AutoModel.from_pretrained(str(src), local_files_only=True, attn_implementation="eager")
    model.eval()
    use_token_type = (getattr(model.config, "type_vocab_size", 0) or 0) > 0 and "token_type_ids" in (
        tokenizer.model_input_names
    )
    pooling, max_length = _pooling(src), _max_length(src, config)
    dim = int(getattr(model.config, "hidden_size", 0) or config.get("hidden_size", 0))

    with atomic_dir(dst) as tmp:
        samples = [
            "pneumonia of the right lower lobe",
            "a longer sentence about an MRI scan of the knee joint",
        ]
        enc = tokenizer(samples, padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if use_token_type else [])
        args = tuple(enc[n] if n in enc else torch.zeros_like(enc["input_ids"]) for n in names)
        wrapped = _Encoder.wrap(model, use_token_type)
        with torch.no_grad(), warnings.catch_warnings():
            # Tracer warnings about shape-dependent Python branches: _verify checks other shapes below.
            warnings.simplefilter("ignore")
            # The TorchScript exporter: the dynamo one needs onnxscript, which is not a dependency of ours.
            torch.onnx.export(
                wrapped,
                args,
                str(tmp / MODEL_FILE),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={
                    **{n: {0: "batch", 1: "sequence"} for n in names},
                    "last_hidden_state": {0: "batch", 1: "sequence"},
                },
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        for name in _TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        # fastembed truncates at tokenizer_config's model_max_length: make it the sentence-transformers limit.
        tok_cfg = _read_json(tmp / "tokenizer_config.json")
        tok_cfg["model_max_length"] = max_length
        tok_cfg.pop("max_length", None)
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), encoding="utf-8")
        manifest = {
            "format": 1,
            "source": str(src),
            "model_file": MODEL_FILE,
            "inputs": names,
            "output": "last_hidden_state",
            "pooling": pooling,
            "normalize": _normalize(src),
            "dim": dim,
            "max_length": max_length,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if verify:
            _verify(tmp, wrapped, tokenizer, names, pooling, max_length, atol, np, torch)
    return dst


def _pool(hidden: Any, mask: Any, pooling: str, np: Any) -> Any:
    if pooling == "cls":
        out = hidden[:, 0]
    else:
        m = mask[:, :, None].astype(hidden.dtype)
        out = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _verify(
    tmp: Path,
    wrapped: Any,
    tokenizer: Any,
    names: list,
    pooling: str,
    max_length: int,
    atol: float,
    np,
    torch,
) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    # Shapes other than the traced one: a padded batch of three, one unpadded text, one long text.
    batches = [
        [
            "Right lower lobe pneumonia",
            "no acute cardiopulmonary abnormality; heart size normal, lungs clear",
            "MRI",
        ],
        ["Adenocarcinoma"],
        ["The chest radiograph shows " + "bilateral patchy opacities and small effusions, " * 12],
    ]
    sess = ort.InferenceSession(str(tmp / MODEL_FILE), providers=["CPUExecutionProvider"])
    for texts in batches:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feeds = {n: enc[n].astype(np.int64) if n in enc else np.zeros_like(enc["input_ids"]) for n in names}
        got = sess.run(["last_hidden_state"], feeds)[0]
        with torch.no_grad():
            ref = wrapped(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
        mask = feeds["attention_mask"]
        err = float(np.abs(_pool(got, mask, pooling, np) - _pool(ref, mask, pooling, np)).max())
        if not err <= atol:
            raise RuntimeError(
                f"ONNX export of {tmp} disagrees with torch on {len(texts)} text(s) of "
                f"{mask.shape[1]} tokens: max |diff| {err:.2e} > {atol:.0e}"
            )
