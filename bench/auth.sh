#!/usr/bin/env bash
# The cost of authentication on ingest (spec/security.md): one switchyard binary, three
# configurations in alternating rounds — no authentication, a static bearer token (an
# Identity), a JWT (a TokenIssuer with its keys in a file) — each driven by wrk for 10 s with
# 1 KiB binary-mode events, every request carrying the token (none for the first).
#
#   bench/auth.sh [BINARY] [ROUNDS]
#
# BINARY defaults to target/release/switchyard, ROUNDS to 3. NO_FSYNC=1 serves with
# `--no-fsync` so the disk's fsync time does not drown the difference. The JWT is signed with
# the test issuer's Ed25519 key (tests/fixtures/auth) by openssl, valid for an hour; the
# server verifies it once and then finds it in its cache, as it would for a client that
# reuses its token. Needs wrk and openssl. Prints a line per run, then the mean of each
# configuration and its cost against no authentication. A run with any non-2xx answer
# fails the script: a benchmark of refusals measures nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/switchyard} rounds=${2:-3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
tck=$(getconf CLK_TCK)
fixtures=tests/fixtures/auth

mkdir -p "$work/none" "$work/token" "$work/jwt"
cat >"$work/none/broker.yaml" <<'EOF'
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
EOF
cp "$work/none/broker.yaml" "$work/token/"
cp "$work/none/broker.yaml" "$work/jwt/"
cat >"$work/token/identity.yaml" <<'EOF'
apiVersion: switchyard.dev/v1
kind: Identity
metadata: {name: bench}
spec:
  token: {value: bench-token-0123456789abcdef}
EOF
cat >"$work/jwt/issuer.yaml" <<EOF
apiVersion: switchyard.dev/v1
kind: TokenIssuer
metadata: {name: bench}
spec:
  issuer: https://issuer.test
  audiences: [switchyard]
  jwks: {file: $PWD/$fixtures/jwks.json}
EOF

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"EdDSA","kid":"test-ed25519","typ":"JWT"}' | b64url)
payload=$(printf '{"iss":"https://issuer.test","aud":"switchyard","sub":"system:serviceaccount:default:bench","iat":%d,"exp":%d}' \
  "$now" "$((now + 3600))" | b64url)
printf '%s.%s' "$header" "$payload" >"$work/signing-input"
signature=$(openssl pkeyutl -sign -inkey "$fixtures/issuer-ed25519.pem" -rawin \
  -in "$work/signing-input" | b64url)
jwt="$header.$payload.$signature"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A total_rate total_cpu
run() { # configuration, token
  local config=$1 token=$2 data="$work/data" pid ticks0 ticks1 n rate out non2xx cpu
  rm -rf "$data"
  "$bin" serve -c "$work/$config" --data-dir "$data" --listen 127.0.0.1:18091 \
    ${NO_FSYNC:+--no-fsync} >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null 127.0.0.1:18091/healthz && break; sleep 0.1; done
  ticks0=$(cpu_ticks "$pid")
  out=$(wrk -t2 -c64 -d10s ${token:+-H "Authorization: Bearer $token"} -s bench/ingest.lua \
    http://127.0.0.1:18091/default/default)
  ticks1=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  non2xx=$(awk '/^non-2xx:/ {gsub(",", "", $2); print $2}' <<<"$out")
  if [ "$non2xx" != 0 ]; then
    echo "$config: $non2xx answers were not 2xx; is the token accepted?" >&2
    exit 1
  fi
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  cpu=$(python3 -c "print(f'{($ticks1 - $ticks0) / $tck * 1e6 / max($n, 1):.1f}')")
  printf '%s\t%.0f/s\t%s µs CPU/event\n' "$config" "$rate" "$cpu"
  total_rate[$config]=$(python3 -c "print(${total_rate[$config]:-0} + $rate)")
  total_cpu[$config]=$(python3 -c "print(${total_cpu[$config]:-0} + $cpu)")
}

for _ in $(seq "$rounds"); do
  run none ""
  run token bench-token-0123456789abcdef
  run jwt "$jwt"
done

python3 - "$rounds" "${total_rate[none]}" "${total_cpu[none]}" "${total_rate[token]}" \
  "${total_cpu[token]}" "${total_rate[jwt]}" "${total_cpu[jwt]}" <<'EOF'
import sys
rounds = int(sys.argv[1])
v = [float(x) / rounds for x in sys.argv[2:]]
base_rate, base_cpu = v[0], v[1]
print(f"mean none\t{base_rate:,.0f}/s\t{base_cpu:.1f} µs CPU/event")
for name, rate, cpu in (("token", v[2], v[3]), ("jwt", v[4], v[5])):
    print(f"mean {name}\t{rate:,.0f}/s ({(rate / base_rate - 1) * 100:+.1f} %)"
          f"\t{cpu:.1f} µs CPU/event ({(cpu / base_cpu - 1) * 100:+.1f} %)")
EOF
