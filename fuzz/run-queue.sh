#!/usr/bin/env bash
# Fuzzes several targets, two at a time (one per core), each with fuzz/run.sh until its
# plateau (QUIET_EXECS executions, default 10 million, without a new edge) or its share of
# the time is spent, at the lowest CPU priority so builds and tests beside it go first.
#
#   fuzz/run-queue.sh END_EPOCH_SECONDS TARGET...
#
# A target starts only while at least 20 minutes remain before END_EPOCH_SECONDS and runs
# for at most MAX_SECONDS (default an hour); what run.sh prints goes to fuzz/out/TARGET.txt.
set -euo pipefail
cd "$(dirname "$0")"
end=$1
shift
export end quiet=${QUIET_EXECS:-10000000} most=${MAX_SECONDS:-3600}
mkdir -p out
printf '%s\n' "$@" | xargs -P 2 -I{} bash -c '
  left=$(( end - $(date +%s) ))
  [ "$left" -ge 1200 ] || { echo "{}: skipped, $left s left"; exit 0; }
  seconds=$(( left < most ? left : most ))
  echo "{}: $(date -u +%H:%M) for up to $seconds s"
  nice -n 19 ./run.sh {} "$seconds" "$quiet" > out/{}.txt 2>&1 || echo "{}: run.sh failed (out/{}.txt)"
  echo "{}: $(date -u +%H:%M) done"'
