#!/usr/bin/env bash
# Fuzzes one target with AFL++ for a while, then keeps the minimised corpus.
#
#   fuzz/run.sh TARGET [SECONDS [QUIET_SECONDS]]     (default 600, no quiet limit)
#
# With QUIET_SECONDS the run also ends once AFL has found no new path for that long
# (AFL_EXIT_ON_TIME): the target's plateau, which the runs table in README.md reports.
#
# Needs cargo-afl (`cargo install --locked cargo-afl --version 0.18.2`, then
# `cargo afl config --build` once; about 10 minutes on 2 cores). Builds fuzz/afl with AFL's
# instrumentation, runs `cargo afl fuzz` from fuzz/corpus/TARGET into fuzz/out/TARGET, then
# replaces fuzz/corpus/TARGET with what `cargo afl cmin` keeps of the queue. Any input that
# failed is copied to fuzz/found/TARGET: fix what it shows, and the replay test
# (fuzz/tests/replay.rs) keeps it fixed. Prints AFL's summary (executions, paths, crashes).
set -euo pipefail
cd "$(dirname "$0")"
target=$1 seconds=${2:-600} quiet=${3:-}
(cd afl && cargo afl build --release --quiet)
bin=afl/target/release/switchyard-afl
out=out/$target
rm -rf "$out"
mkdir -p out
env AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
  ${quiet:+AFL_EXIT_ON_TIME=$quiet} cargo afl fuzz -i "corpus/$target" -o "$out" -V "$seconds" -- "$bin" "$target" >"$out.log" 2>&1 || true
stats=$out/default/fuzzer_stats
[ -f "$stats" ] || { tail -20 "$out.log"; exit 1; }
grep -E '^(start_time|last_update|last_find|run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg|cycles_done|cycles_wo_finds)' "$stats"
if ls "$out"/default/crashes/id:* >/dev/null 2>&1; then
  mkdir -p "found/$target"
  cp "$out"/default/crashes/id:* "found/$target/"
  echo "crashes copied to fuzz/found/$target"
fi
min=$(mktemp -d)
AFL_SKIP_CPUFREQ=1 cargo afl cmin -i "$out/default/queue" -o "$min/c" -- "$bin" "$target" >/dev/null 2>&1 || true
if [ -d "$min/c" ] && [ -n "$(ls -A "$min/c")" ]; then
  rm -rf "corpus/$target" && mkdir -p "corpus/$target"
  i=0
  for f in "$min"/c/*; do cp "$f" "corpus/$target/$(printf '%04d' $i)"; i=$((i + 1)); done
  echo "corpus/$target: $i inputs"
fi
rm -rf "$min"
