#!/usr/bin/env bash
# Builds Tessera and the limit program with profile-guided optimisation
# (PGO), and prints the directory that holds the two binaries. See
# bench/README.md.
#
#   bench/pgo.sh               # trained on SQLite
#   bench/pgo.sh --postgres    # trained on PostgreSQL (BENCH_POSTGRES_URL)
#
# 1. builds both with instrumentation (target/pgo/generate);
# 2. trains them: a short bench/run.sh with those binaries, scenarios 1 to
#    5 for BENCH_PGO_TRAIN_SECONDS (3) seconds each, without the peer and
#    without runs 1p, 1c and 1t;
# 3. merges the profiles with the toolchain's llvm-profdata (installed with
#    `rustup component add llvm-tools` if missing);
# 4. builds both again with the profiles (target/pgo/use).
# Only Rust code is optimised so: aws-lc's C code, the signing, is built as
# in a plain release build. RUSTFLAGS set by the caller are replaced.
set -euo pipefail
shopt -s inherit_errexit
case "${1:-}" in
  "" | --postgres) ;;
  *) echo "usage: bench/pgo.sh [--postgres]" >&2; exit 2 ;;
esac
cd -- "$(dirname -- "$0")/.." >/dev/null
root=$(pwd)
out=$root/target/pgo
# With an explicit --target, RUSTFLAGS reach only the target's code, not
# build scripts and proc-macros, which would otherwise write profiles too.
host=$(rustc -vV | sed -n 's/^host: //p')

profdata() { find "$(rustc --print sysroot)" -name llvm-profdata -type f -print -quit; }
if [ -z "$(profdata)" ]; then
  echo "installing llvm-tools (rustup component)" >&2
  rustup component add llvm-tools >&2
fi
llvm_profdata=$(profdata)
if [ -z "$llvm_profdata" ]; then
  echo "PGO: no llvm-profdata in the toolchain (rustup component add llvm-tools)" >&2
  exit 1
fi

rm -rf "$out/profiles"
mkdir -p "$out/profiles"
echo "PGO: building with instrumentation" >&2
RUSTFLAGS="-Cprofile-generate=$out/profiles" CARGO_TARGET_DIR=$out/generate \
  cargo build --release -q --target "$host" -p tessera -p bench-limit

echo "PGO: training" >&2
BENCH_BIN_DIR=$out/generate/$host/release BENCH_DURATION=${BENCH_PGO_TRAIN_SECONDS:-3} \
  BENCH_ROUNDS=1 BENCH_TENANTS=0 BENCH_PACED_SHARE=0 BENCH_PEER_DIR=/nonexistent \
  bash "$root/bench/run.sh" "$@" >"$out/training.log" 2>&1 ||
  { echo "PGO: training failed; see $out/training.log" >&2; exit 1; }
if [ -z "$(find "$out/profiles" -name '*.profraw' -size +0)" ]; then
  echo "PGO: training wrote no profile" >&2
  exit 1
fi
"$llvm_profdata" merge -o "$out/merged.profdata" "$out/profiles" >&2

echo "PGO: building with the profiles" >&2
RUSTFLAGS="-Cprofile-use=$out/merged.profdata" CARGO_TARGET_DIR=$out/use \
  cargo build --release -q --target "$host" -p tessera -p bench-limit
echo "$out/use/$host/release"
