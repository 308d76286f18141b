#!/usr/bin/env bash
# Sets up (cached) and runs the main job on the embedded defaults: `medix demo`, a few dozen MediX-R1 GRPO
# steps on the CPU with a tiny real policy, the in-process GGUF judge and the ONNX embedder.
# Usage: bash scripts/demo.sh [--out DIR] [--steps N]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$root"
pip install --quiet .
bash scripts/test-models.sh >/dev/null
exec medix demo "$@"
