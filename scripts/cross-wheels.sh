#!/usr/bin/env bash
# Cross-compiles the Linux wheels this x86-64 machine can build without Docker (zig as the linker), then checks
# their tags and ELF machine: aarch64 manylinux2014 and x86-64 musllinux_1_2. Needs rustup targets
# (`rustup target add aarch64-unknown-linux-gnu x86_64-unknown-linux-musl`), maturin and ziglang (dev.lock).
# Usage: scripts/cross-wheels.sh [OUT_DIR]   (default dist/cross); CARGO_TARGET_DIR is kept between runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/dist/cross}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/medix-r1/cargo-cross}"
cd "$root"
rm -rf "$out"
for spec in "aarch64-unknown-linux-gnu manylinux2014" "x86_64-unknown-linux-musl musllinux_1_2"; do
  set -- $spec
  rustup target list --installed | grep -qx "$1" || {
    echo "cross-wheels: rustup target $1 is not installed: rustup target add $1" >&2; exit 2; }
  echo "== $1 ($2)" >&2
  maturin build --release --locked --quiet --zig --target "$1" --compatibility "$2" -o "$out"
done
bash "$root/scripts/check-wheels.sh" "$out"/*.whl
