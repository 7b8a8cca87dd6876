#!/usr/bin/env bash
# Builds Tessera and the limit program with profile-guided optimisation
# (PGO), and prints the directory that holds the two binaries. See
# bench/README.md.
#
#   bench/pgo.sh               # trained on SQLite
#   bench/pgo.sh --postgres    # trained on PostgreSQL (BENCH_POSTGRES_URL)
#
# 1. builds both with instrumentation (target/pgo/generate);
# 2. trains them: a short bench/run.sh with those binaries, every scenario
#    for BENCH_PGO_TRAIN_SECONDS (3) seconds, the peer left out;
# 3. merges the profiles with the toolchain's llvm-profdata (installed with
#    `rustup component add llvm-tools` if missing);
# 4. builds both again with the profiles (target/pgo/use).
# Only Rust code is optimised so: aws-lc's C code, the signing, is built as
# in a plain release build.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root=$(pwd)
out=$root/target/pgo

profdata() { find "$(rustc --print sysroot)" -name llvm-profdata -type f | head -1; }
if [ -z "$(profdata)" ]; then
  echo "installing llvm-tools (rustup component)" >&2
  rustup component add llvm-tools >&2
fi
llvm_profdata=$(profdata)

rm -rf "$out/profiles"
mkdir -p "$out/profiles"
echo "PGO: building with instrumentation" >&2
RUSTFLAGS="-Cprofile-generate=$out/profiles" CARGO_TARGET_DIR=$out/generate \
  cargo build --release -q -p tessera -p bench-limit

echo "PGO: training" >&2
BENCH_BIN_DIR=$out/generate/release BENCH_DURATION=${BENCH_PGO_TRAIN_SECONDS:-3} \
  BENCH_ROUNDS=1 BENCH_TENANTS=0 BENCH_PACED_SHARE=0 BENCH_PEER_DIR=/nonexistent \
  bash "$root/bench/run.sh" "$@" >"$out/training.log" 2>&1 ||
  { echo "PGO: training failed; see $out/training.log" >&2; exit 1; }
if [ -z "$(find "$out/profiles" -name '*.profraw' -size +0)" ]; then
  echo "PGO: training wrote no profile" >&2
  exit 1
fi
"$llvm_profdata" merge -o "$out/merged.profdata" "$out/profiles"

echo "PGO: building with the profiles" >&2
RUSTFLAGS="-Cprofile-use=$out/merged.profdata" CARGO_TARGET_DIR=$out/use \
  cargo build --release -q -p tessera -p bench-limit
echo "$out/use/release"
