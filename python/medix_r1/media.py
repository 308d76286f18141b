"""Images and vision checkpoints, shared by training and evaluation: reading an image reference (a path to
PNG/JPEG/... or DICOM, a ``{"bytes", "path"}`` dict, raw bytes, a PIL image) into a PIL RGB image, and telling
from a checkpoint's ``config.json`` whether it takes images. PIL, NumPy and pydicom are imported only when an
image is read.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

from medix_r1.errors import DataError, MedixError

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MissingDependencyError",
    "is_vision_checkpoint",
    "load_image",
]

# Bounds on one image, checked before anything is decoded: bytes read from a file (a 3 GB sparse file is
# refused from its size, a /proc file stops at the cap) and pixels (width x height from the header; a
# 13000 x 13000 PNG would take 1.3 GB). Vision processors resize to well under a megapixel; 40 M pixels
# still takes a 6000 x 6000 radiograph whole.
MAX_IMAGE_BYTES = 256 * 2**20
MAX_IMAGE_PIXELS = 40_000_000
# A multi-frame DICOM gives one image: its middle frame (NumberOfFrames // 2), the only frame decoded.


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
        raw = ref.get("bytes")
        if raw is not None and not isinstance(raw, (bytes, bytearray, memoryview)):
            # bytes(1e11) would allocate 100 GB, bytes("abc") raise a TypeError: neither is image data.
            raise DataError(f"image entry's bytes must be binary data, got {type(raw).__name__}")
        if raw:
            data = bytes(raw)
        elif ref.get("path"):
            if not isinstance(ref["path"], (str, Path)):
                raise DataError(f"image entry's path must be a string, got {type(ref['path']).__name__}")
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
        data = _read_capped(path)
    if img is None:
        assert data is not None
        if (len(data) > 132 and data[128:132] == b"DICM") or (
            path is not None and path.suffix.lower() in (".dcm", ".dicom")
        ):
            img = _dicom_to_pil(data, path)
        else:
            where = f" {path}" if path else ""
            try:
                with warnings.catch_warnings():  # PIL's bomb warning: the size is checked here instead
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    img = Image.open(io.BytesIO(data))  # reads the header only
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(
                        f"image{where} is {w} x {h} pixels, more than the {MAX_IMAGE_PIXELS:,} read "
                        "(medix_r1.media.MAX_IMAGE_PIXELS); shrink it first",
                        path=path,
                    )
                img.load()
            except DataError:
                raise
            except Exception as e:  # PIL raises many types for a bad file; all mean "cannot read it"
                raise DataError(f"unreadable image{where}: {e}", path=path) from None
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    return img


def _read_capped(path: Path) -> bytes:
    """The file's bytes, refused (DataError) when over MAX_IMAGE_BYTES or unreadable (``/proc/self/mem``)."""
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise DataError(
                f"image file {path} is {size:,} bytes, more than the {MAX_IMAGE_BYTES:,} read "
                "(medix_r1.media.MAX_IMAGE_BYTES)",
                path=path,
            )
        with open(path, "rb") as f:  # a size of 0 proves nothing (/proc): read at most the cap + 1
            # Read what the size says, then on to the end in small pieces (read(cap) would allocate the
            # whole cap for every image).
            chunks = [f.read(size + 1 if size else 1 << 20)]
            total = len(chunks[0])
            while chunks[-1] and total <= MAX_IMAGE_BYTES:
                chunks.append(f.read(min(1 << 20, MAX_IMAGE_BYTES + 1 - total)))
                total += len(chunks[-1])
            data = chunks[0] if total == len(chunks[0]) else b"".join(chunks)
    except OSError as e:
        raise DataError(f"image file {path} cannot be read: {e.strerror or e}", path=path) from None
    if len(data) > MAX_IMAGE_BYTES:
        raise DataError(f"image file {path} holds more than {MAX_IMAGE_BYTES:,} bytes", path=path)
    return data


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
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        if rows * cols > MAX_IMAGE_PIXELS:
            raise DataError(
                f"DICOM{f' {path}' if path else ''} frames are {cols} x {rows} pixels, more than the "
                f"{MAX_IMAGE_PIXELS:,} read (medix_r1.media.MAX_IMAGE_PIXELS)",
                path=path,
            )
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            # A multi-frame DICOM (a volume, a cine loop): only its middle frame is decoded, so memory is
            # one frame's whatever the number of frames (decoding them all took frames x 8 bytes a pixel).
            from pydicom.pixels import pixel_array

            arr = pixel_array(ds, index=frames // 2).astype(np.float64)
        else:
            arr = ds.pixel_array.astype(np.float64)
    except DataError:
        raise
    except Exception as e:  # pydicom raises many types for a bad or compressed file
        raise DataError(f"unreadable DICOM{f' {path}' if path else ''}: {e}", path=path) from None
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        arr = arr[arr.shape[0] // 2]  # frames the header did not announce: the middle one
    lo, hi = np.percentile(arr, [0.5, 99.5]) if arr.size else (0.0, 1.0)
    arr = np.clip((arr - lo) / max(hi - lo, 1e-9), 0, 1) * 255
    return Image.fromarray(arr.astype(np.uint8))
