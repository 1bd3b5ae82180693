#!/usr/bin/env bash
# A/B of two switchyard binaries in one sitting, alternating: A, B, A, B, … (ROUNDS each).
#
#   bench/ab.sh BINARY_A BINARY_B [ROUNDS]
#
# Each round runs both workloads against a fresh data directory:
# - "1 trigger": one Broker and one match-all Trigger delivering to `switchyard-bench sink`;
#   wrk POSTs 1 KiB events for 10 s; the figure is the sink's deliveries per second (first to
#   last delivery);
# - "ingest": the same Broker without a Trigger; the figure is wrk's requests per second.
# CPU per event is the server's utime + stime over the run (from /proc/<pid>/stat) divided by
# the events counted. Needs wrk (apt-get install wrk) and a release `switchyard-bench`
# (SWITCHYARD_BENCH, default target/release/switchyard-bench). NO_FSYNC=1 serves with
# `--no-fsync`, which takes the disk's (often drifting) fsync time out of a comparison of
# code paths. Prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 rounds=${3:-3}
bench=${SWITCHYARD_BENCH:-target/release/switchyard-bench}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
tck=$(getconf CLK_TCK)

"$bench" sink --listen 127.0.0.1:19000 >/dev/null 2>&1 &
for _ in $(seq 100); do curl -sf 127.0.0.1:19000/stats >/dev/null && break; sleep 0.1; done

mkdir -p "$work/ingest" "$work/trigger"
cat >"$work/ingest/broker.yaml" <<'EOF'
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
EOF
cp "$work/ingest/broker.yaml" "$work/trigger/"
cat >"$work/trigger/trigger.yaml" <<'EOF'
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: all}
spec:
  broker: default
  subscriber: {uri: http://127.0.0.1:19000/}
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # binary, workload
  local bin=$1 workload=$2 data="$work/data" pid ticks0 ticks1 n out
  rm -rf "$data"
  "$bin" serve -c "$work/$workload" --data-dir "$data" --listen 127.0.0.1:18090 \
    ${NO_FSYNC:+--no-fsync} >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null 127.0.0.1:18090/healthz && break; sleep 0.1; done
  curl -s 127.0.0.1:19000/stats >/dev/null # resets the sink
  ticks0=$(cpu_ticks "$pid")
  out=$(wrk -t2 -c64 -d10s -s bench/ingest.lua http://127.0.0.1:18090/default/default)
  if [ "$workload" = trigger ]; then
    # Deliveries still in flight when wrk stops are counted once they arrive.
    sleep 2
    read -r n rate < <(curl -s 127.0.0.1:19000/stats |
      python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["deliveries"], s["rate_per_s"])')
  else
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  fi
  ticks1=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "
n, t = $n, ($ticks1 - $ticks0) / $tck
print(f'{\"$bin\"}\t$workload\t{$rate:,.0f}/s\t{t * 1e6 / max(n, 1):.1f} µs CPU/event')"
}

for _ in $(seq "$rounds"); do
  for bin in "$a" "$b"; do
    run "$bin" trigger
    run "$bin" ingest
  done
done
