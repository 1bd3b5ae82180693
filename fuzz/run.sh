#!/usr/bin/env bash
# Fuzzes one target with AFL++ for a while, then keeps the minimised corpus.
#
#   fuzz/run.sh TARGET [SECONDS [QUIET_EXECS]]     (default 600, no quiet limit)
#
# With QUIET_EXECS the run also ends once AFL has made that many executions without finding
# a new edge (new coverage; a new path that is only a new hit count of known edges does not
# count): the target's plateau, which the runs table in README.md reports. It is counted in
# executions, not seconds, so a run beside a build (at the lowest priority, starved of CPU)
# does not reach it just by waiting.
#
# Needs cargo-afl (`cargo install --locked cargo-afl --version 0.18.2`, then
# `cargo afl config --build` once; about 10 minutes on 2 cores). Builds fuzz/afl with AFL's
# instrumentation, runs `cargo afl fuzz` from fuzz/corpus/TARGET into fuzz/out/TARGET, then
# replaces fuzz/corpus/TARGET with what `cargo afl cmin` keeps of the queue. Any input that
# failed is copied to fuzz/found/TARGET: fix what it shows, and the replay test
# (fuzz/tests/replay.rs) keeps it fixed. Prints AFL's summary (executions, paths, crashes)
# and the edges AFL had found QUIET_EXECS (default 10 million) executions before the end.
set -euo pipefail
cd "$(dirname "$0")"
target=$1 seconds=${2:-600} quiet=${3:-}
window=${quiet:-10000000}
(cd afl && cargo afl build --release --quiet)
bin=afl/target/release/switchyard-afl
out=out/$target
rm -rf "$out" "$out.plateau"
mkdir -p out
# cargo-afl runs AFL with CMPLOG (`-c0`), whose input-to-state stage costs many executions per
# byte of input. Every run here resumes from a corpus that has had that stage, so it is kept for
# what the run finds (`AFL_CMPLOG_ONLY_NEW`, AFL's advice for resuming): without it every run redid
# it over the whole corpus, and s3, whose seeds reach 94 KiB, ran at 1,500 executions a second
# where it now runs at 3,500 to 15,000.
# A target with a dictionary (dict/TARGET.dict: the words its format is made of) gets it.
dict=()
[ -f "dict/$target.dict" ] && dict=(-x "dict/$target.dict")
env AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
  AFL_CMPLOG_ONLY_NEW=1 cargo afl fuzz "${dict[@]}" -i "corpus/$target" -o "$out" -V "$seconds" -- "$bin" "$target" >"$out.log" 2>&1 &
fuzz=$!
stats=$out/default/fuzzer_stats
plot=$out/default/plot_data
if [ -n "$quiet" ]; then
  # plot_data (every 5 s): total_execs is the 12th column, edges_found the 13th.
  while kill -0 "$fuzz" 2>/dev/null; do
    sleep 10
    [ -f "$plot" ] || continue
    read -r found_at now < <(awk -F', *' '!/^#/ { if ($13 != e) { e = $13; at = $12 } last = $12 }
      END { print at + 0, last + 0 }' "$plot")
    if [ $((now - found_at)) -ge "$quiet" ]; then
      pid=$(awk -F' *: *' '$1 == "fuzzer_pid" { print $2 }' "$stats" 2>/dev/null || true)
      # Noted beside AFL's log, not in it: AFL writes on at its own offset over an append.
      echo "plateau: no new edge in the last $((now - found_at)) executions" >"$out.plateau"
      [ -n "$pid" ] && kill -INT "$pid"
      break
    fi
  done
fi
wait "$fuzz" || true
[ -f "$stats" ] || { tail -20 "$out.log"; exit 1; }
grep -E '^(start_time|last_update|last_find|run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg|edges_found|cycles_done|cycles_wo_finds)' "$stats"
cat "$out.plateau" 2>/dev/null || true
# Coverage `window` executions before the end (edges_found is plot_data's 13th column): the
# runs table reports how much the last stretch added.
awk -F', *' -v w="$window" '!/^#/ { n++; x[n] = $12; e[n] = $13 }
  END { for (i = n; i > 0 && x[n] - x[i] < w; i--) ; if (i > 0) print "edges_" w "_execs_before_end : " e[i] }' \
  "$plot"
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
