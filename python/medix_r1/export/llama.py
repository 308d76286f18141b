"""llama.cpp's own converters (from the llama-cpp-python source distribution) and quantizer, offline.

The converters (``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``, with the ``conversion`` package and
the ``gguf-py`` they were released with) ship inside the llama-cpp-python sdist under ``vendor/llama.cpp/``;
only those Python files are extracted, once, into the medix cache. Quantization is llama.cpp's
``llama_model_quantize`` through ``llama_cpp``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from medix_r1._fsutil import atomic_dir, file_sha256
from medix_r1.errors import MedixError, MissingModelError

__all__ = [
    "CONVERTER_ENV",
    "QUANTS",
    "ConverterError",
    "LlamaSource",
    "fetch_sdist",
    "find_llama_source",
    "quantize",
    "run_converter",
]

CONVERTER_ENV = "MEDIX_LLAMA_CPP_SOURCE"
SDIST_GLOB = "llama_cpp_python-*.tar.gz"
DEFAULT_INDEX = "https://pypi.org/simple"
# SHA-256 of llama-cpp-python source distributions as PyPI publishes them (the version requirements/dev.lock
# pins at least): a fetched sdist of one of these versions must match, whatever the index says.
SDIST_SHA256 = {"0.3.36": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"}

# --quant name -> llama.cpp file type (``LLAMA_FTYPE_*``); f16/bf16/f32 come straight from the converter.
QUANTS = {
    "f32": "ALL_F32",
    "f16": "MOSTLY_F16",
    "bf16": "MOSTLY_BF16",
    "q8_0": "MOSTLY_Q8_0",
    "q6_k": "MOSTLY_Q6_K",
    "q5_k_m": "MOSTLY_Q5_K_M",
    "q5_k_s": "MOSTLY_Q5_K_S",
    "q5_0": "MOSTLY_Q5_0",
    "q5_1": "MOSTLY_Q5_1",
    "q4_k_m": "MOSTLY_Q4_K_M",
    "q4_k_s": "MOSTLY_Q4_K_S",
    "q4_0": "MOSTLY_Q4_0",
    "q4_1": "MOSTLY_Q4_1",
    "iq4_nl": "MOSTLY_IQ4_NL",
    "iq4_xs": "MOSTLY_IQ4_XS",
    "q3_k_l": "MOSTLY_Q3_K_L",
    "q3_k_m": "MOSTLY_Q3_K_M",
    "q3_k_s": "MOSTLY_Q3_K_S",
    "q2_k": "MOSTLY_Q2_K",
}
FLOAT_TYPES = ("f32", "f16", "bf16")

_HOW = (
    "give --converter with a llama-cpp-python source distribution (llama_cpp_python-X.tar.gz: on a "
    "connected machine `pip download llama-cpp-python==X --no-deps --no-binary :all:`; `medix bundle "
    "create` carries one in tools/) or a llama.cpp checkout, or --bundle DIR, or set " + CONVERTER_ENV
)


class ConverterError(MedixError, RuntimeError):
    """llama.cpp's converter or quantizer is missing or failed; the message says which and how to fix it."""


class LlamaSource:
    """A folder holding ``convert_hf_to_gguf.py`` (and its ``conversion``/``gguf-py``) plus where it came
    from (``origin``: the sdist or folder given, ``sha256`` of an sdist, ``version``)."""

    def __init__(self, root: Path, origin: str, sha256: str | None, version: str | None) -> None:
        self.root, self.origin, self.sha256, self.version = root, origin, sha256, version

    @property
    def hf_converter(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    @property
    def lora_converter(self) -> Path:
        return self.root / "convert_lora_to_gguf.py"

    def describe(self) -> dict[str, str | None]:
        return {"origin": self.origin, "sha256": self.sha256, "version": self.version}


def _cache_root() -> Path:
    root = os.environ.get("MEDIX_CACHE", str(Path.home() / ".cache" / "medix-r1"))
    return Path(root).expanduser() / "llama.cpp"


def _wanted(rel: str) -> bool:
    """The converter's own Python files inside vendor/llama.cpp/ (not the C++ sources, 70 MB of them)."""
    if "/" not in rel:
        return rel.endswith(".py")
    top = rel.split("/", 1)[0]
    return top in ("conversion", "gguf-py") or (top == "models" and rel.endswith(".py"))


def _extract_sdist(sdist: Path) -> LlamaSource:
    digest = file_sha256(sdist)
    m = re.match(r"llama_cpp_python-(.+)\.tar\.gz$", sdist.name)
    version = m.group(1) if m else None
    out = _cache_root() / f"{sdist.name.removesuffix('.tar.gz')}-{digest[:16]}"
    if not (out / "convert_hf_to_gguf.py").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(out) as tmp, tarfile.open(sdist, "r:gz") as tar:
            members = []
            for ti in tar.getmembers():
                parts = ti.name.split("/", 1)
                if len(parts) < 2 or not parts[1].startswith("vendor/llama.cpp/"):
                    continue
                rel = parts[1][len("vendor/llama.cpp/") :]
                if not rel or not (ti.isfile() or ti.isdir()) or not _wanted(rel):
                    continue
                ti.name = rel
                members.append(ti)
            if not any(t.name == "convert_hf_to_gguf.py" for t in members):
                raise ConverterError(
                    f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside; is it the llama-cpp-python "
                    "source distribution?"
                )
            tar.extractall(tmp, members=members, filter="data")
    return LlamaSource(out, str(sdist), digest, version)


def _from_path(p: Path) -> LlamaSource:
    p = p.expanduser()
    if p.is_file() and p.name.endswith(".tar.gz"):
        return _extract_sdist(p.resolve())
    if p.is_file() and p.name == "convert_hf_to_gguf.py":
        p = p.parent
    for d in (p, p / "vendor" / "llama.cpp"):
        if (d / "convert_hf_to_gguf.py").is_file():
            return LlamaSource(d.resolve(), str(p), None, None)
    raise MissingModelError(
        f"llama.cpp converter: {p} is neither a llama-cpp-python sdist nor a llama.cpp folder; {_HOW}"
    )


def find_llama_source(converter: str | Path | None = None, bundle: str | Path | None = None) -> LlamaSource:
    """The converter to use: ``converter`` (an sdist, a llama.cpp folder or its ``convert_hf_to_gguf.py``),
    else the sdist in ``bundle``/tools, else ``$MEDIX_LLAMA_CPP_SOURCE``, else an sdist in the test-models
    folder (where ``scripts/test-models.sh`` puts one, as the demo finds its models). Never downloads."""
    if converter:
        return _from_path(Path(converter))
    if bundle:
        found = sorted((Path(bundle).expanduser() / "tools").glob(SDIST_GLOB))
        if found:
            return _extract_sdist(found[-1].resolve())
    env = os.environ.get(CONVERTER_ENV)
    if env:
        return _from_path(Path(env))
    from medix_r1.train.demo import models_dir

    found = sorted(models_dir().glob(SDIST_GLOB))
    if found:
        return _extract_sdist(found[-1].resolve())
    raise MissingModelError(f"llama.cpp's converter (convert_hf_to_gguf.py) was not found: {_HOW}")


def _index_files(index: str, project: str) -> list[dict]:
    """The files of ``project`` on a PEP 503/691 simple index: ``{"filename", "url", "hashes"}`` each."""
    import json
    import urllib.parse
    import urllib.request
    from html.parser import HTMLParser

    page = f"{index.rstrip('/')}/{project}/"
    req = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            ctype, body = r.headers.get("Content-Type", ""), r.read()
    except OSError as e:
        raise ConverterError(f"cannot read the package index {page}: {e}; {_HOW}") from None
    if "json" in ctype:
        files = json.loads(body)["files"]
        return [{**f, "url": urllib.parse.urljoin(page, f["url"])} for f in files]
    links: list[dict] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            href = dict(attrs).get("href")
            if tag == "a" and href:
                url, _, frag = urllib.parse.urljoin(page, href).partition("#")
                algo, _, digest = frag.partition("=")
                name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
                links.append({"filename": name, "url": url, "hashes": {algo: digest} if digest else {}})

    Links().feed(body.decode("utf-8", "replace"))
    return links


def fetch_sdist(
    dest: Path,
    version: str,
    *,
    index_url: str | None = None,
    find_links: list[str] | tuple[str, ...] = (),
    log: Callable[[str], None] = print,
) -> Path:
    """Put ``llama_cpp_python-VERSION.tar.gz`` in ``dest``: from a ``find_links`` folder, else from the simple
    index (``index_url``, else ``$PIP_INDEX_URL``, else PyPI), checked against the SHA-256 medix pins for that
    version (:data:`SDIST_SHA256`) and the one the index publishes. Only the archive is fetched (``pip
    download`` of an sdist installs its build backend just to read the metadata). A file whose hash differs
    is removed and refused; nothing unchecked is left under the final name."""
    import shutil
    import urllib.request

    name = f"llama_cpp_python-{version}.tar.gz"
    pinned = SDIST_SHA256.get(version)
    part = dest / f"{name}.part"
    dest.mkdir(parents=True, exist_ok=True)
    local = [Path(d.removeprefix("file://")).expanduser() / name for d in find_links if "://" not in d
             or d.startswith("file://")]  # fmt: skip
    found = next((f for f in local if f.is_file()), None)
    published: str | None = None
    if found is not None:
        where = str(found)
        log(f"llama-cpp-python {version} source distribution: copying {found}")
        shutil.copyfile(found, part)
    else:
        index = index_url or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX
        match = [f for f in _index_files(index, "llama-cpp-python") if f["filename"] == name]
        if not match:
            raise ConverterError(
                f"{index}: no {name} on the index (llama-cpp-python {version}'s source distribution); "
                "give one with --llama-sdist FILE"
            )
        where, published = match[0]["url"], (match[0].get("hashes") or {}).get("sha256")
        log(f"llama-cpp-python {version} source distribution: fetching {where}")
        try:
            with urllib.request.urlopen(where, timeout=600) as r, open(part, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
        except OSError as e:
            part.unlink(missing_ok=True)
            raise ConverterError(f"fetching {where} failed: {e}; give the file with --llama-sdist") from None
    got = file_sha256(part)
    for want, whose in (
        (pinned, f"the one medix pins for llama-cpp-python {version}"),
        (published, "the index's"),
    ):
        if want is not None and got != want.lower():
            part.unlink()
            raise ConverterError(
                f"{name} from {where}: SHA-256 {got} differs from {whose}, {want}; refused (not the "
                "published file: a corrupt download or a tampered mirror). Give a verified copy with "
                "--llama-sdist"
            )
    if pinned is None and published is None:
        part.unlink()
        raise ConverterError(
            f"{name} from {where}: no SHA-256 to check it against (medix pins none for {version} and the "
            "index published none); give a verified copy with --llama-sdist FILE"
        )
    final = dest / name
    os.replace(part, final)
    return final


def _offline_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use the gguf-py it was released with
    return env


def _run_python(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """This Python on ``args`` in a child process, its stdout and stderr captured together as text."""
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        check=False,
    )


def run_converter(script: Path, args: list[str], what: str, log_file: Path | None = None) -> None:
    """Run one of llama.cpp's converter scripts in a child process (its crash is a report, not ours); on
    failure its whole output goes to ``log_file`` and the error is one line."""
    proc = _run_python([str(script), *args], env=_offline_env())
    if proc.returncode != 0:
        lines = [x.strip() for x in proc.stdout.strip().splitlines() if x.strip()]
        last = lines[-1] if lines else ""
        err = next((x for x in reversed(lines) if "Error" in x or "not supported" in x), last)
        hint = ""
        if re.search(r"not supported|NotImplementedError", proc.stdout):
            hint = f"; llama.cpp's converter ({script.parent.name}) does not support this architecture"
        where = ""
        if log_file is not None:
            log_file.write_text(proc.stdout)
            where = f" (full output: {log_file})"
        raise ConverterError(f"{what} failed (exit {proc.returncode}): {err[:300]}{hint}{where}")


def quantize(src: Path, dst: Path, quant: str, threads: int | None = None) -> None:
    """``llama_model_quantize`` ``src`` (an f16/bf16/f32 GGUF) into ``dst`` as ``quant``, in a child process:
    llama.cpp logs every tensor to stderr, and a native abort must be a report, not the end of the export."""
    if quant not in QUANTS:
        raise ConverterError(f"--quant {quant!r}: allowed {', '.join(QUANTS)}")
    code = "import sys; from medix_r1.export.llama import _quantize; _quantize(*sys.argv[1:])"
    proc = _run_python(["-c", code, str(src), str(dst), quant, str(threads or 0)])
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-10:])
        raise ConverterError(
            f"llama_model_quantize {src.name} -> {quant} failed (exit {proc.returncode}):\n{tail}"
        )


def _quantize(src: str, dst: str, quant: str, threads: str) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{QUANTS[quant]}")
    params.nthread = int(threads)
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize returned {rc}")
