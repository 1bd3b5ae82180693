#!/usr/bin/env bash
# Fuzzes one target with AFL++ for a while, then keeps the minimised corpus.
#
#   [JOBS=N] fuzz/run.sh TARGET [SECONDS [QUIET_EXECS]]     (default 600, no quiet limit)
#
# With QUIET_EXECS the run also ends once AFL has made that many executions without finding
# a new edge (new coverage; a new path that is only a new hit count of known edges does not
# count): the target's plateau, which the runs table in README.md reports. It is counted in
# executions, not seconds, so a run beside a build (at the lowest priority, starved of CPU)
# does not reach it just by waiting.
#
# JOBS=N (default 1) runs N AFL instances on the target, one main (`-M`) and N-1 secondaries
# (`-S`), which take in each other's finds: one per core when the target is the only one left.
# Their executions add up; the plateau counts every instance's executions since the last time
# any of them saw a new edge (one taking in another's find counts too, so it is never early).
#
# Needs cargo-afl (`cargo install --locked cargo-afl --version 0.18.2`, then
# `cargo afl config --build` once; about 10 minutes on 2 cores). Builds fuzz/afl with AFL's
# instrumentation, runs `cargo afl fuzz` from fuzz/corpus/TARGET into fuzz/out/TARGET, then
# replaces fuzz/corpus/TARGET with what `cargo afl cmin` keeps of the queues. Any input that
# failed or hung is copied to fuzz/found/TARGET: fix what it shows, and the replay test
# (fuzz/tests/replay.rs) keeps it fixed. Prints AFL's summary (executions, paths, crashes)
# of each instance and the edges it had found QUIET_EXECS (default 10 million) of its
# executions before its end.
set -euo pipefail
cd "$(dirname "$0")"
target=$1 seconds=${2:-600} quiet=${3:-}
window=${quiet:-10000000}
jobs=${JOBS:-1}
(cd afl && cargo afl build --release --quiet)
bin=afl/target/release/switchyard-afl
out=out/$target
rm -rf "$out" "$out.plateau"
mkdir -p out
# One instance is AFL's `default`; several are `main`, `s2`, `s3` …
names=(default)
if [ "$jobs" -gt 1 ]; then
  names=(main)
  for i in $(seq 2 "$jobs"); do names+=("s$i"); done
fi
# cargo-afl runs AFL with CMPLOG (`-c0`), whose input-to-state stage costs many executions per
# byte of input. Every run here resumes from a corpus that has had that stage, so it is kept for
# what the run finds (`AFL_CMPLOG_ONLY_NEW`, AFL's advice for resuming): without it every run redid
# it over the whole corpus, and s3, whose seeds reach 94 KiB, ran at 1,500 executions a second
# where it now runs at 3,500 to 15,000.
# A target with a dictionary (dict/TARGET.dict: the words its format is made of) gets it.
dict=()
[ -f "dict/$target.dict" ] && dict=(-x "dict/$target.dict")
# AFL's log of instance NAME (the first one's is out/TARGET.log, as with one instance).
log_of() { if [ "$1" = "${names[0]}" ]; then echo "$out.log"; else echo "$out.$1.log"; fi; }
# Several instances are made to differ, as AFL++'s advice for several cores has it: the main
# one keeps CMPLOG and the default power schedule; each secondary runs without CMPLOG (`-c -`
# after cargo-afl's `-c0`), so it spends its executions on mutations, and with a schedule of
# its own (`-p`), so it favours other inputs of the queue. What one finds, the others take in.
schedules=(rare coe fast lin quad exploit mmopt seek)
pids=()
for name in "${names[@]}"; do
  role=()
  case $name in
  main) role=(-M main) ;;
  default) ;;
  *) n=${name#s}; role=(-S "$name" -c - -p "${schedules[$(((n - 2) % ${#schedules[@]}))]}") ;;
  esac
  env AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    AFL_CMPLOG_ONLY_NEW=1 cargo afl fuzz "${role[@]}" "${dict[@]}" -i "corpus/$target" -o "$out" \
    -V "$seconds" -- "$bin" "$target" >"$(log_of "$name")" 2>&1 &
  pids+=($!)
done
running() {
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}
# Executions (every instance's) since the last new edge any instance saw. plot_data (a line
# every 5 s): relative_time is the 1st column, total_execs the 12th, edges_found the 13th;
# fuzzer_stats' start_time puts the instances' times on one clock.
quiet_execs() {
  local args=() name start
  for name in "${names[@]}"; do
    start=$(awk -F' *: *' '$1 == "start_time" { print $2 }' "$out/$name/fuzzer_stats" 2>/dev/null || true)
    [ -n "$start" ] && [ -s "$out/$name/plot_data" ] || return 1
    args+=("start=$start" "$out/$name/plot_data")
  done
  awk -F', *' 'FNR == 1 { k++ } /^#/ { next }
    { t = start + $1; n[k]++; T[k, n[k]] = t; X[k, n[k]] = $12
      if (!(k in E) || $13 != E[k]) { E[k] = $13; L[k] = t } }
    END { for (i = 1; i <= k; i++) if (L[i] > at) at = L[i]
      for (i = 1; i <= k; i++) { base = 0
        for (j = 1; j <= n[i]; j++) if (T[i, j] <= at) base = X[i, j]
        q += X[i, n[i]] - base }
      print q + 0 }' "${args[@]}"
}
if [ -n "$quiet" ]; then
  while running; do
    sleep 10
    q=$(quiet_execs) || continue
    if [ "$q" -ge "$quiet" ]; then
      # Noted beside AFL's log, not in it: AFL writes on at its own offset over an append.
      echo "plateau: no new edge in the last $q executions" >"$out.plateau"
      for name in "${names[@]}"; do
        pid=$(awk -F' *: *' '$1 == "fuzzer_pid" { print $2 }' "$out/$name/fuzzer_stats" 2>/dev/null || true)
        [ -n "$pid" ] && kill -INT "$pid" || true
      done
      break
    fi
  done
fi
for pid in "${pids[@]}"; do wait "$pid" || true; done
queues=$(mktemp -d)
for name in "${names[@]}"; do
  stats=$out/$name/fuzzer_stats
  [ -f "$stats" ] || { tail -20 "$(log_of "$name")"; exit 1; }
  [ "$jobs" -gt 1 ] && echo "$name:"
  grep -E '^(start_time|last_update|last_find|run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg|edges_found|cycles_done|cycles_wo_finds)' "$stats"
  # Coverage `window` executions before the end (edges_found is plot_data's 13th column): the
  # runs table reports how much the last stretch added.
  awk -F', *' -v w="$window" '!/^#/ { n++; x[n] = $12; e[n] = $13 }
    END { for (i = n; i > 0 && x[n] - x[i] < w; i--) ; if (i > 0) print "edges_" w "_execs_before_end : " e[i] }' \
    "$out/$name/plot_data"
  # Several instances' inputs are told apart by the instance's name.
  prefix=
  [ "$jobs" -gt 1 ] && prefix=$name-
  if ls "$out/$name"/crashes/id:* >/dev/null 2>&1; then
    mkdir -p "found/$target"
    for f in "$out/$name"/crashes/id:*; do cp "$f" "found/$target/$prefix$(basename "$f")"; done
    echo "crashes copied to fuzz/found/$target"
  fi
  # A hang is an input slower than AFL's timeout: a slow path to find and fix, as hang-7 was.
  if ls "$out/$name"/hangs/id:* >/dev/null 2>&1; then
    mkdir -p "found/$target"
    for f in "$out/$name"/hangs/id:*; do cp "$f" "found/$target/${prefix}hang-$(basename "$f")"; done
    echo "hangs copied to fuzz/found/$target"
  fi
  for f in "$out/$name"/queue/id:*; do
    [ -e "$f" ] && cp "$f" "$queues/$prefix$(basename "$f")"
  done
done
cat "$out.plateau" 2>/dev/null || true
min=$(mktemp -d)
AFL_SKIP_CPUFREQ=1 cargo afl cmin -i "$queues" -o "$min/c" -- "$bin" "$target" >/dev/null 2>&1 || true
if [ -d "$min/c" ] && [ -n "$(ls -A "$min/c")" ]; then
  rm -rf "corpus/$target" && mkdir -p "corpus/$target"
  i=0
  for f in "$min"/c/*; do cp "$f" "corpus/$target/$(printf '%04d' $i)"; i=$((i + 1)); done
  echo "corpus/$target: $i inputs"
fi
rm -rf "$min" "$queues"
