"""Tell what a model path really is (GGUF file, ONNX embedder directory, Hugging Face checkpoint) and whether
it can be loaded, without loading the heavy libraries unless asked; shared by `bundle create` and `doctor`.

A GGUF file is recognised by its magic bytes and its metadata is read directly (the format is a
small key/value header), so a text file renamed ``.gguf`` or a truncated download is caught before
llama.cpp sees it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from medix_r1.errors import MissingModelError

__all__ = ["GgufError", "describe_model", "gguf_metadata", "read_json"]


def read_json(path: Path, error: type[Exception], remedy: str) -> Any:
    """The JSON document in ``path``, or ``error`` naming the file, the reason and ``remedy``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise error(f"{path}: not readable JSON ({e}); {remedy}") from None


_GGUF_MAGIC = b"GGUF"
# GGUF value types -> struct format of one scalar (8: string, 9: array are handled apart).
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class GgufError(MissingModelError):
    """A file given as a GGUF model is not a readable GGUF file (wrong magic bytes, truncated header)."""


def _read(f: BinaryIO, n: int, path: Path) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise GgufError(
            f"{path}: the GGUF header is truncated (an incomplete download or copy?); copy it again"
        )
    return b


def _read_str(f: BinaryIO, path: Path) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8, path))
    if n > 1 << 30:
        raise GgufError(f"{path}: corrupt GGUF header (a string of {n} bytes); copy the file again")
    return _read(f, n, path).decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, vtype: int, path: Path, keep: bool) -> Any:
    if vtype == 8:
        return _read_str(f, path)
    if vtype == 9:
        (etype,) = struct.unpack("<I", _read(f, 4, path))
        (count,) = struct.unpack("<Q", _read(f, 8, path))
        if etype in _SCALARS and not keep:  # e.g. token scores: skip without decoding
            f.seek(struct.calcsize(_SCALARS[etype]) * count, 1)
            return None
        items = [_read_value(f, etype, path, keep) for _ in range(count)]
        return items if keep else None
    fmt = _SCALARS.get(vtype)
    if fmt is None:
        raise GgufError(
            f"{path}: unknown GGUF value type {vtype}; the file is corrupt or from a newer format"
        )
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt), path))[0]


def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (arrays such as the vocabulary are left out as ``None``).

    Raises :class:`GgufError` naming the file when it is not GGUF (e.g. a text file named ``.gguf``).
    """
    p = Path(path)
    if not p.is_file():
        raise MissingModelError(f"{p}: no such file")
    with open(p, "rb") as f:
        magic = f.read(4)
        if magic != _GGUF_MAGIC:
            raise GgufError(
                f"{p}: not a GGUF model (the file starts with {magic!r}, not b'GGUF'); give the path of a "
                "real .gguf file, e.g. one converted with llama.cpp's convert_hf_to_gguf.py"
            )
        (version,) = struct.unpack("<I", _read(f, 4, p))
        _n_tensors, n_kv = struct.unpack("<QQ", _read(f, 16, p))
        meta: dict[str, Any] = {"gguf.version": version}
        for _ in range(n_kv):
            key = _read_str(f, p)
            (vtype,) = struct.unpack("<I", _read(f, 4, p))
            meta[key] = _read_value(f, vtype, p, keep=False)
    return meta


def _readme_license(d: Path) -> str | None:
    """The ``license:`` of a Hugging Face model card's YAML front matter."""
    card = d / "README.md"
    if not card.is_file():
        return None
    lines = card.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:200]:
        if line.strip() == "---":
            break
        if line.startswith("license:"):
            return line.split(":", 1)[1].strip().strip("'\"") or None
    return None


def _export_record(d: Path, hashes: bool) -> dict[str, Any]:
    """``d/export.json`` with every file it lists checked (size; SHA-256 when ``hashes``)."""
    import hashlib

    try:
        rec = json.loads((d / "export.json").read_text(encoding="utf-8"))
        files = list(rec["files"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MissingModelError(
            f"{d / 'export.json'}: not a medix export record ({e}); export again"
        ) from None
    for f in files:
        fp = d / f["name"]
        if not fp.is_file() or fp.stat().st_size != f["size"]:
            raise MissingModelError(
                f"{fp}: missing or of another size than export.json says ({f['size']} bytes); copy the "
                "export "
                "folder again"
            )
        if hashes:
            h = hashlib.sha256()
            with open(fp, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != f["sha256"]:
                raise MissingModelError(
                    f"{fp}: its SHA-256 differs from export.json's; copy the export again"
                )
    return rec


def _has_weights(d: Path) -> bool:
    return any(q.suffix in _WEIGHT_SUFFIXES for q in d.iterdir() if q.is_file())


def describe_model(path: str | Path, role: str, *, load: bool = False) -> dict[str, Any]:
    """Check ``path`` as the ``role`` model (judge, embed, policy) and describe it.

    Returns ``{"kind": "gguf" | "onnx" | "checkpoint", "detail": str, "license": str | None}``; raises
    MissingModelError (or GgufError) naming the file and what to do when it is absent or not what it claims.
    With ``load`` the ONNX model is opened in an ONNX Runtime session (cheap; the GGUF is only read, not run).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingModelError(f"{role} model: no such file or directory: {p}")
    if p.is_dir() and (p / "export.json").is_file():  # a `medix export` folder: described by its model
        rec = _export_record(p, load)
        model = next((f for f in rec["files"] if f["role"] == "model"), None)
        if model is not None:
            return describe_model(p / model["name"], role, load=load)
        # a merged export: a checkpoint directory, described below
    if p.is_file():
        if p.suffix != ".gguf" and role != "embed":
            raise MissingModelError(f"{role} model {p}: expected a .gguf file or a checkpoint directory")
        if role == "embed":
            raise MissingModelError(
                f"embed model {p}: expected a directory (an ONNX export from `medix embed export`, or a "
                "Hugging Face checkpoint to export)"
            )
        meta = gguf_metadata(p)
        has_template = bool(meta.get("tokenizer.chat_template"))
        arch = meta.get("general.architecture", "?")
        name = meta.get("general.name") or p.name
        detail = f"GGUF v{meta['gguf.version']} {arch} {name!s}, {p.stat().st_size / 2**20:.0f} MiB"
        if role in ("judge", "policy") and not has_template:
            raise GgufError(
                f"{p}: the GGUF has no chat template (tokenizer.chat_template) in its metadata; medix-r1 "
                "prompts models through their chat template: use an instruct/chat GGUF"
            )
        out: dict[str, Any] = {
            "kind": "gguf",
            "detail": detail + ", chat template present",
            "license": meta.get("general.license"),
        }
        rec_file = p.parent / "export.json"
        if rec_file.is_file():  # exported by `medix export`: its record is checked too
            rec = _export_record(p.parent, load)
            if any(f["name"] == p.name for f in rec["files"]):
                src = rec.get("source") or {}
                out["detail"] += (
                    f"; medix export {rec.get('format')} {rec.get('quant')} of adapter "
                    f"{str(src.get('adapter_sha256'))[:12]}, {len(rec['files'])} files "
                    + ("match export.json's SHA-256s" if load else "match export.json's sizes")
                )
                out["export"] = {k: rec.get(k) for k in ("format", "quant", "dtype", "source", "created")}
        return out
    if (p / "model.onnx").is_file():
        detail = f"ONNX embedder, {(p / 'model.onnx').stat().st_size / 2**20:.0f} MiB"
        if not (p / "tokenizer.json").is_file():
            raise MissingModelError(
                f"{p}: an ONNX model without tokenizer.json; export it with `medix embed export`"
            )
        if load:
            try:
                import onnxruntime as ort
            except ImportError:
                detail += " (not opened: onnxruntime is not installed)"
            else:
                try:
                    sess = ort.InferenceSession(str(p / "model.onnx"), providers=["CPUExecutionProvider"])
                except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
                    raise MissingModelError(
                        f"{p / 'model.onnx'}: ONNX Runtime cannot load it ({str(e).splitlines()[0]}); "
                        "export it again with `medix embed export`"
                    ) from None
                detail += f", loads in ONNX Runtime (inputs {', '.join(i.name for i in sess.get_inputs())})"
        return {"kind": "onnx", "detail": detail, "license": _readme_license(p)}
    cfg = p / "config.json"
    if not cfg.is_file():
        raise MissingModelError(
            f"{role} model {p}: a directory without config.json or model.onnx; give a Hugging Face "
            "checkpoint directory (config.json + weights) or an ONNX export"
        )
    config = read_json(cfg, MissingModelError, "copy the checkpoint again")
    if not _has_weights(p):
        raise MissingModelError(
            f"{role} model {p}: config.json but no weights (*.safetensors / *.bin); copy the whole "
            "checkpoint directory, including the weight files"
        )
    arch = (config.get("architectures") or [config.get("model_type", "?")])[0]
    return {"kind": "checkpoint", "detail": f"checkpoint {arch}", "license": _readme_license(p)}
