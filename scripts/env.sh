# Sourced by scripts/test.sh and scripts/demo.sh: a pinned virtual environment cached OUTSIDE the clone,
# keyed on the lock file and the Python version, so a fresh clone reuses it and a lock change rebuilds it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MEDIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/medix-r1}"
python="${PYTHON:-python3}"
# llama-cpp-python is compiled here with the CMake arguments in requirements/llama-cmake-args (GGML_NATIVE=ON:
# what `pip install "medix-r1[judge]"` builds on a user's machine, AMX included on an AMX CPU, so CI on any
# machine tests what users get there; the run-time CPU decision in medix_r1.llm.cpu keeps it safe).
llama_cmake="$(grep -v '^#' "$root/requirements/llama-cmake-args" | tr '\n' ' ')"
key="$( (cat "$root/requirements/dev.lock"; echo "$llama_cmake"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
venv="$cache/venv-$key"
mkdir -p "$cache"
# One builder at a time: a second shell sourcing this while the first builds waits for it (an unlocked
# check once deleted a venv that another process was still installing into).
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "== creating the pinned environment $venv (first run: ~10 minutes, torch and llama.cpp)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  grep -v '^llama-cpp-python' "$root/requirements/dev.lock" > "$venv/lock-without-llama.txt"
  "$venv/bin/pip" install --quiet -r "$venv/lock-without-llama.txt"
  # Built from source with explicit arguments; --no-cache-dir because pip's wheel cache ignores CMAKE_ARGS.
  CMAKE_ARGS="$llama_cmake" FORCE_CMAKE=1 "$venv/bin/pip" install --quiet --no-cache-dir --no-binary llama-cpp-python \
    "$(grep '^llama-cpp-python' "$root/requirements/dev.lock" | cut -d' ' -f1)"
  touch "$venv/.complete"
fi
flock -u 9
exec 9>&-
export PATH="$venv/bin:$PATH"
export MEDIX_TEST_MODELS="${MEDIX_TEST_MODELS:-$cache/test-models}"
# Offline at run time: nothing may reach a model hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
