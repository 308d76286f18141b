"""Images and vision checkpoints, shared by training and evaluation: reading an image reference (a path to
PNG/JPEG/... or DICOM, a ``{"bytes", "path"}`` dict, raw bytes, a PIL image) into a PIL RGB image, and telling
from a checkpoint's ``config.json`` whether it takes images. PIL, NumPy and pydicom are imported only when an
image is read.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from medix_r1.errors import DataError, MedixError

__all__ = ["MissingDependencyError", "is_vision_checkpoint", "load_image"]


class MissingDependencyError(MedixError, ImportError):
    """An optional package needed for this input is not installed; the message says what to install."""


def is_vision_checkpoint(path: str | Path, kind: str = "auto") -> bool:
    """Whether the transformers checkpoint at ``path`` takes images (``kind`` other than auto decides)."""
    if kind != "auto":
        return kind == "vision"
    try:
        conf = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(conf, dict):
        return False
    return "vision_config" in conf or any(
        "Vision" in a or "ImageText" in a for a in conf.get("architectures") or [] if isinstance(a, str)
    )


def load_image(ref: Any, base: Path, max_side: int = 0) -> Any:
    """A PIL RGB image from a path (relative ones against ``base``), a ``{"bytes", "path"}`` dict, raw bytes
    or a PIL image, its longer side shrunk to ``max_side`` (0: kept). Raises :class:`DataError` (a
    ValueError) with the reason when it cannot be read, and :class:`MissingDependencyError` when reading it
    needs pydicom and pydicom is not installed."""
    from PIL import Image

    img = None
    data: bytes | None = None
    path: Path | None = None
    if isinstance(ref, Image.Image):
        img = ref
    elif isinstance(ref, (bytes, bytearray)):
        data = bytes(ref)
    elif isinstance(ref, dict):
        if ref.get("bytes"):
            data = bytes(ref["bytes"])
        elif ref.get("path"):
            path = Path(ref["path"])
        else:
            raise DataError("image entry has neither bytes nor path")
    elif isinstance(ref, (str, Path)):
        path = Path(ref)
    else:
        raise DataError(f"unsupported image reference of type {type(ref).__name__}")
    if path is not None:
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise DataError(f"image file not found: {path}", path=path)
        data = path.read_bytes()
    if img is None:
        assert data is not None
        if (len(data) > 132 and data[128:132] == b"DICM") or (
            path is not None and path.suffix.lower() in (".dcm", ".dicom")
        ):
            img = _dicom_to_pil(data, path)
        else:
            try:
                img = Image.open(io.BytesIO(data))
                img.load()
            except Exception as e:  # PIL raises many types for a bad file; all mean "cannot read it"
                where = f" {path}" if path else ""
                raise DataError(f"unreadable image{where}: {e}", path=path) from None
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    return img


def _dicom_to_pil(data: bytes, path: Path | None) -> Any:
    import numpy as np
    from PIL import Image

    try:
        import pydicom
    except ImportError:
        raise MissingDependencyError(
            f"reading DICOM images{f' ({path})' if path else ''} needs pydicom: install pydicom "
            "(pip install pydicom, or the medix-r1[train] extra)"
        ) from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        arr = ds.pixel_array.astype(np.float64)
    except Exception as e:  # pydicom raises many types for a bad or compressed file
        raise DataError(f"unreadable DICOM{f' {path}' if path else ''}: {e}", path=path) from None
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        arr = arr[arr.shape[0] // 2]  # a multi-frame volume: take the middle slice
    lo, hi = np.percentile(arr, [0.5, 99.5]) if arr.size else (0.0, 1.0)
    arr = np.clip((arr - lo) / max(hi - lo, 1e-9), 0, 1) * 255
    return Image.fromarray(arr.astype(np.uint8))
