"""``medix export``: a trained run's LoRA adapter as a merged 16-bit checkpoint, a quantized GGUF (with the
vision projector of a vision model) or a llama.cpp LoRA GGUF, with an ``export.json`` of what was made from
what; offline, and never a half-written file under a final name.

Layout of ``--out``: ``merged``: the transformers checkpoint itself (``config.json``, ``*.safetensors``,
tokenizer/processor with the chat template); ``gguf``: ``<name>-<quant>.gguf`` (+ ``mmproj-<name>-f16.gguf``);
``gguf-lora``: ``<name>-lora-<quant>.gguf``. ``export.json`` is written last: a folder without it is
unfinished. Work in progress lives in ``--out/.work/`` (a finished merge there is reused by a rerun).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medix_r1._fsutil import atomic_dir, file_sha256
from medix_r1.errors import MedixError, MissingModelError, ResumeMismatchError, check_model_path
from medix_r1.export.llama import (
    FLOAT_TYPES,
    QUANTS,
    ConverterError,
    find_llama_source,
    quantize,
    run_converter,
)

__all__ = [
    "EXPORT_FILE",
    "FORMATS",
    "ConverterError",
    "ExportError",
    "ExportSource",
    "export",
    "read_export",
    "resolve_source",
]

EXPORT_FILE = "export.json"
FORMATS = ("merged", "gguf", "gguf-lora")
DTYPES = ("bfloat16", "float16", "float32")
_WORK = ".work"
_MERGED_MARK = "medix_merged.json"


class ExportError(MedixError, ValueError):
    """The export cannot be made from what was given; the message names the input and the fix."""


class ExportSource:
    """What is exported: the ``adapter`` folder, the ``base`` checkpoint it was trained on, the run folder
    (when known), whether the base is a vision-language model, and the adapter's content hash."""

    def __init__(self, adapter: Path, base: Path, run: Path | None, vision: bool) -> None:
        self.adapter, self.base, self.run, self.vision = adapter, base, run, vision
        self.adapter_sha256 = tree_sha256(adapter)

    @property
    def name(self) -> str:
        return (self.run or self.adapter).name

    def describe(self) -> dict[str, Any]:
        return {
            "run": None if self.run is None else str(self.run),
            "adapter": str(self.adapter),
            "adapter_sha256": self.adapter_sha256,
            "base": str(self.base),
            "vision": self.vision,
        }


def tree_sha256(folder: Path) -> str:
    """One hash over every file's relative path and content in ``folder``."""
    h = hashlib.sha256()
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + file_sha256(p).encode() + b"\n")
    return h.hexdigest()


def _base_from_run(run: Path) -> Path | None:
    cfg_file = run / "run_config.yaml"
    if not cfg_file.is_file():
        return None
    import yaml

    model = (yaml.safe_load(cfg_file.read_text()) or {}).get("model") or {}
    path = model.get("path")
    if not path:
        return None
    p = Path(path).expanduser()
    if p.suffix.lower() == ".gguf":
        # The run trained on the checkpoint converted once from this GGUF (cached; made again if missing).
        from medix_r1.train.convert import gguf_to_checkpoint

        check_model_path(p, f"{cfg_file}: model.path (the run's base GGUF)", "give --base DIR instead")
        return gguf_to_checkpoint(p, model.get("converted_dir") or None)
    return p


def resolve_source(
    run: str | Path | None, adapter: str | Path | None, base: str | Path | None
) -> ExportSource:
    """The adapter and base to export from ``--run`` (its ``adapter/`` and ``run_config.yaml``'s model) or
    ``--adapter`` (+ ``--base``, else the adapter's own ``base_model_name_or_path``)."""
    from medix_r1.media import is_vision_checkpoint
    from medix_r1.train.convert import is_checkpoint

    if bool(run) == bool(adapter):
        raise ExportError("give exactly one of --run DIR (a medix train/demo output) or --adapter DIR")
    run_p = None
    if run:
        run_p = check_model_path(
            run, "--run", "Give the output folder of medix train / medix demo", directory=True
        )
        adapter_p = run_p / "adapter"
    else:
        adapter_p = Path(str(adapter)).expanduser().resolve()
    if not (adapter_p / "adapter_config.json").is_file():
        raise MissingModelError(
            f"{adapter_p}: no adapter_config.json (a LoRA adapter as PEFT saves it); "
            + ("the run has not finished: finish or --resume it first" if run else "give the adapter folder")
        )
    base_p: Path | None = Path(base).expanduser() if base else None
    if base_p is None and run_p is not None:
        base_p = _base_from_run(run_p)
    if base_p is None:
        cfg = json.loads((adapter_p / "adapter_config.json").read_text())
        guess = cfg.get("base_model_name_or_path")
        if guess and Path(guess).expanduser().is_dir():
            base_p = Path(guess).expanduser()
    if base_p is None:
        raise MissingModelError(f"{adapter_p}: the base checkpoint is not known here; give --base DIR")
    base_p = base_p.resolve()
    if not is_checkpoint(base_p):
        raise MissingModelError(
            f"--base {base_p}: not a transformers checkpoint (config.json + weights); give the 16-bit "
            "checkpoint the adapter was trained on"
        )
    qc = json.loads((base_p / "config.json").read_text()).get("quantization_config") or {}
    if qc:
        raise ExportError(
            f"--base {base_p} is stored quantized ({qc.get('quant_method', 'quantized')}); a merge needs the "
            "16-bit original checkpoint (QLoRA runs load it in 4-bit, the export loads it in 16-bit): "
            "give it "
            "with --base"
        )
    return ExportSource(adapter_p, base_p, run_p, is_vision_checkpoint(base_p))


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("medix-r1", "torch", "transformers", "peft", "llama-cpp-python", "gguf", "safetensors"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _default_dtype(base: Path) -> str:
    cfg = json.loads((base / "config.json").read_text())
    d = cfg.get("torch_dtype") or cfg.get("dtype") or (cfg.get("text_config") or {}).get("dtype")
    return d if d in ("bfloat16", "float16") else "bfloat16"


def merge(src: ExportSource, out: Path, dtype: str, finish: Callable[[Path], None] | None = None) -> None:
    """Write the adapter merged into the base, in ``dtype``, to ``out`` (atomically: ``finish(tmp)`` runs
    last, before the rename) with its tokenizer or processor and chat template."""
    import torch
    import transformers
    from peft import PeftModel

    from medix_r1.train.convert import plain_byte_level

    torch_dtype = getattr(torch, dtype)
    kw: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True, "low_cpu_mem_usage": True}
    model: Any
    if src.vision:
        model = transformers.AutoModelForImageTextToText.from_pretrained(str(src.base), **kw)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(src.base), **kw)
    model = PeftModel.from_pretrained(model, str(src.adapter), local_files_only=True)
    model = model.merge_and_unload()
    # The adapter folder holds the processing class the run trained with (chat template included).
    proc_dir = src.adapter if (src.adapter / "tokenizer_config.json").is_file() else src.base
    if src.vision:
        proc: Any = transformers.AutoProcessor.from_pretrained(str(proc_dir), local_files_only=True)
        tok = proc.tokenizer
    else:
        proc = tok = transformers.AutoTokenizer.from_pretrained(str(proc_dir), local_files_only=True)
    if not getattr(tok, "chat_template", None) and not getattr(proc, "chat_template", None):
        raise ExportError(
            f"{proc_dir}: the tokenizer has no chat template; the export could not be chatted with"
        )
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        proc.save_pretrained(str(tmp))
        # train/convert.py writes plain byte-level tokenizers now; a run trained before saved its adapter's
        # tokenizer (used above) with SentencePiece byte fallback, which llama.cpp's converter misreads.
        plain_byte_level(tmp / "tokenizer.json")
        if finish is not None:
            finish(tmp)
        else:
            mark = {"adapter_sha256": src.adapter_sha256, "base": str(src.base), "dtype": dtype}
            (tmp / _MERGED_MARK).write_text(json.dumps(mark))


def _merged_ok(path: Path, src: ExportSource, dtype: str) -> bool:
    mark = path / _MERGED_MARK
    if not mark.is_file():
        return False
    info = json.loads(mark.read_text())
    return info == {"adapter_sha256": src.adapter_sha256, "base": str(src.base), "dtype": dtype}


def _clean_stale(parent: Path, name: str) -> None:
    """Remove ``name.tmp-PID`` folders (:func:`atomic_dir`'s) left by a killed export whose PID is gone."""
    for p in parent.glob(f"{name}.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass


def _commit(tmp: Path, final: Path) -> Path:
    os.replace(tmp, final)
    return final


def read_export(out: str | Path) -> dict[str, Any] | None:
    p = Path(out) / EXPORT_FILE
    return json.loads(p.read_text()) if p.is_file() else None


def _wanted_record(src: ExportSource, fmt: str, quant: str, dtype: str) -> dict[str, Any]:
    return {
        "format": fmt,
        "quant": quant,
        "dtype": dtype,
        "adapter_sha256": src.adapter_sha256,
        "base": str(src.base),
    }


def _check_out(out: Path, want: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The finished export already in ``out`` for the same inputs (None: make it); refuses a folder that
    holds something else unless ``overwrite``."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder")
    done = read_export(out)
    if done is not None:
        have = {k: done.get(k) for k in ("format", "quant", "dtype")}
        have.update(adapter_sha256=done["source"]["adapter_sha256"], base=done["source"]["base"])
        same = have == want and all(
            (out / f["name"]).is_file() and (out / f["name"]).stat().st_size == f["size"]
            for f in done["files"]
        )
        if same:
            return done
        if not overwrite:
            raise ResumeMismatchError(
                f"--out {out} holds another export ({done.get('format')}, {done.get('quant')}, adapter "
                f"{done['source']['adapter_sha256'][:12]}); choose another --out or pass --overwrite"
            )
        shutil.rmtree(out)
        return None
    stray = [p.name for p in out.iterdir() if p.name != _WORK and not p.name.endswith(".part")]
    if stray and not overwrite:
        raise ResumeMismatchError(
            f"--out {out} is not empty and is not an unfinished export ({', '.join(sorted(stray)[:3])}); "
            "choose "
            "another --out or pass --overwrite"
        )
    if stray:
        shutil.rmtree(out)
    return None


def export(
    *,
    out: str | Path,
    run: str | Path | None = None,
    adapter: str | Path | None = None,
    base: str | Path | None = None,
    fmt: str = "gguf",
    quant: str | None = None,
    dtype: str | None = None,
    converter: str | Path | None = None,
    bundle: str | Path | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export and return the ``export.json`` record (see the module docstring for the layout)."""
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: allowed {', '.join(FORMATS)}")
    if fmt == "merged":
        if quant not in (None, "f16", "bf16", "f32"):
            raise ExportError(
                "--format merged is a 16-bit transformers checkpoint: --quant applies to gguf formats"
            )
        if quant and dtype is None:  # --quant f16 on a merged export: the dtype of the checkpoint
            dtype = {"f16": "float16", "bf16": "bfloat16", "f32": "float32"}[quant]
        quant = None
    elif fmt == "gguf-lora":
        quant = quant or "f16"
        if quant not in ("f16", "bf16", "f32", "q8_0"):
            raise ExportError(f"--format gguf-lora --quant {quant!r}: allowed f16, bf16, f32, q8_0")
    else:
        quant = quant or "q8_0"
        if quant not in QUANTS:
            raise ExportError(f"--quant {quant!r}: allowed {', '.join(QUANTS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}: allowed {', '.join(DTYPES)}")
    src = resolve_source(run, adapter, base)
    dtype = dtype or _default_dtype(src.base)
    out_p = Path(out).expanduser().resolve()
    if out_p == src.adapter or out_p == src.base or (src.run is not None and out_p == src.run):
        raise ExportError(f"--out {out_p} is an input of the export; choose a new folder")
    _clean_stale(out_p.parent, out_p.name)
    _clean_stale(out_p / _WORK, "merged")
    want = _wanted_record(src, fmt, quant or "", dtype)
    done = _check_out(out_p, {**want, "quant": quant}, overwrite)
    if done is not None:
        log(f"medix export: {out_p} already holds this export (export.json); nothing to do")
        return done

    llama = None
    if fmt != "merged":  # find the converter before an hour of merging, not after
        llama = find_llama_source(converter, bundle)
    files: list[tuple[str, str]] = []  # (file name in out, role)

    def write_record(folder: Path) -> dict[str, Any]:
        record: dict[str, Any] = {
            "medix_export": 1,
            "format": fmt,
            "quant": quant,
            "dtype": dtype,
            "source": src.describe(),
            "files": [
                {
                    "name": n,
                    "role": role,
                    "size": (folder / n).stat().st_size,
                    "sha256": file_sha256(folder / n),
                }
                for n, role in files
            ],
            "versions": _versions(),
            "converter": None if llama is None else llama.describe(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        record["total_size"] = sum(f["size"] for f in record["files"])
        part = folder / f"{EXPORT_FILE}.part"
        part.write_text(json.dumps(record, indent=2) + "\n")
        _commit(part, folder / EXPORT_FILE)
        return record

    if fmt == "merged":
        log(f"medix export: merging {src.adapter} into {src.base} ({dtype})")
        result: dict[str, Any] = {}

        def finish(tmp: Path) -> None:  # export.json goes in before the folder gets its final name
            files.extend(
                (str(p.relative_to(tmp)), "checkpoint") for p in sorted(tmp.rglob("*")) if p.is_file()
            )
            result.update(write_record(tmp))

        merge(src, out_p, dtype, finish)
        return result
    assert llama is not None and quant is not None
    out_p.mkdir(parents=True, exist_ok=True)
    work = out_p / _WORK
    work.mkdir(exist_ok=True)
    for stale in list(out_p.glob("*.part")) + list(work.glob("*.part")):
        stale.unlink()
    name = src.name
    if fmt == "gguf":
        merged = work / "merged"
        if _merged_ok(merged, src, dtype):
            log(f"medix export: reusing the merged checkpoint in {merged}")
        else:
            log(f"medix export: merging {src.adapter} into {src.base} ({dtype})")
            merge(src, merged, dtype)
        outtype = quant if quant in FLOAT_TYPES else ("bf16" if dtype == "bfloat16" else "f16")
        if dtype == "float32" and quant not in FLOAT_TYPES:
            outtype = "f32"
        full = work / f"{src.adapter_sha256[:12]}-{dtype}-{outtype}.gguf"  # tied to its inputs: safe to reuse
        if full.is_file():
            log(f"medix export: reusing the converted {outtype} GGUF in {work}")
        else:
            log(f"medix export: converting to GGUF ({outtype}) with {llama.hf_converter}")
            part = work / f"{full.name}.part"
            run_converter(
                llama.hf_converter,
                [str(merged), "--outfile", str(part), "--outtype", outtype],
                "convert_hf_to_gguf.py",
                work / "convert.log",
            )
            _commit(part, full)
        final = out_p / f"{name}-{quant}.gguf"
        if quant in FLOAT_TYPES:
            _commit(full, final)
        else:
            log(f"medix export: quantizing to {quant} (llama_model_quantize)")
            part = out_p / f"{final.name}.part"
            quantize(full, part, quant, threads)
            _commit(part, final)
        files.append((final.name, "model"))
        if src.vision:
            mm = out_p / f"mmproj-{name}-f16.gguf"
            log("medix export: converting the vision projector (mmproj, f16)")
            part = work / f"{mm.name}.part"
            try:
                run_converter(
                    llama.hf_converter,
                    [str(merged), "--mmproj", "--outfile", str(part), "--outtype", "f16"],
                    "convert_hf_to_gguf.py --mmproj",
                    work / "convert-mmproj.log",
                )
            except ConverterError as e:
                raise ConverterError(
                    f"the text model was exported to {final}, but llama.cpp's converter cannot write the "
                    f"vision projector of this architecture: {e}"
                ) from None
            _commit(part, mm)
            files.append((mm.name, "mmproj"))
    else:  # gguf-lora
        final = out_p / f"{name}-lora-{quant}.gguf"
        part = out_p / f"{final.name}.part"
        log(f"medix export: converting the adapter to a llama.cpp LoRA GGUF ({quant})")
        run_converter(
            llama.lora_converter,
            ["--base", str(src.base), "--outfile", str(part), "--outtype", quant, str(src.adapter)],
            "convert_lora_to_gguf.py",
            work / "convert-lora.log",
        )
        _commit(part, final)
        files.append((final.name, "lora"))
    shutil.rmtree(work, ignore_errors=True)
    record = write_record(out_p)
    return record
