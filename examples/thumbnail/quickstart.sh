#!/usr/bin/env bash
# The thumbnail quickstart: an image lands in a bucket, a thumbnail appears in another, and
# the pipeline's events are visible. It starts, on this machine:
#   - moto (a local S3 + SQS) on 127.0.0.1:4566, with buckets `photos` and `thumbnails` and
#     the bucket notification photos → SQS queue `photo-uploads`;
#   - the thumbnail function on 127.0.0.1:9090 and the event display on 127.0.0.1:9091;
#   - `switchyard serve` with examples/thumbnail/switchyard.yaml on 127.0.0.1:8080;
# then uploads a sample image, shows the thumbnail and the events, and runs the dead-letter
# demo (a corrupt .jpg, fixed and redriven). Run from a terminal, everything keeps running
# until Ctrl-C, unless --no-wait is given; otherwise (no terminal) it stops at the end. Logs
# and the store are in target/quickstart/. SWITCHYARD_BIN_DIR names a folder with the
# switchyard, thumbnail and event-display binaries already built, to run instead of building
# (the docs' test runs it that way).
set -euo pipefail
cd "$(dirname "$0")/../.."
wait_at_end=1
[ "${1:-}" = "--no-wait" ] && wait_at_end=0
[ -t 0 ] || wait_at_end=0

step() { printf '\n== %s\n' "$*"; }
work=target/quickstart
venv=target/test-venv
py="$venv/bin/python"

step "moto (S3 + SQS) in $venv"
if ! "$py" -c 'import moto, flask, boto3' 2>/dev/null; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.1'
fi

bin=${SWITCHYARD_BIN_DIR:-}
if [ -z "$bin" ]; then
  step "build (release)"
  # Two builds, not one: built alone, switchyard's dependencies get the same features as in
  # scripts/serve's build, so neither rebuilds what the other built.
  cargo build --release --locked -p switchyard
  cargo build --release --locked -p switchyard-example-thumbnail
  bin=target/release
fi

rm -rf "$work" && mkdir -p "$work"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT

port_free() { ! "$py" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1))!=0)"; }
for p in 4566 8080 9090 9091; do
  port_free "$p" || { echo "port $p is in use: stop what listens there first"; exit 1; }
done
wait_for_port() {
  "$py" - "$1" <<'PY' || { echo "nothing listens on $1; see target/quickstart/*.log"; exit 1; }
import socket, sys, time
for _ in range(300):
    if socket.socket().connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0:
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PY
}

step "start moto on 127.0.0.1:4566 and create the buckets, the queue and the notification"
"$venv/bin/moto_server" -H 127.0.0.1 -p 4566 >"$work/moto.log" 2>&1 &
pids+=($!)
wait_for_port 4566
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
s3() { "$py" examples/thumbnail/s3.py "$@"; }
s3 setup

step "start the thumbnail function, the event display and switchyard"
S3_ENDPOINT=http://127.0.0.1:4566 THUMBNAIL_BUCKET=thumbnails THUMBNAIL_MAX_EDGE=256 \
  "$bin/thumbnail" >"$work/thumbnail.log" 2>&1 &
pids+=($!)
"$bin/event-display" >"$work/display.log" 2>&1 &
pids+=($!)
"$bin/switchyard" serve --config examples/thumbnail/switchyard.yaml --data-dir "$work/data" \
  >"$work/switchyard.log" 2>&1 &
pids+=($!)
for p in 9090 9091 8080; do wait_for_port "$p"; done

step "upload examples/thumbnail/sample.jpg as 'holiday photos/plage été.jpg'"
s3 put photos "holiday photos/plage été.jpg" examples/thumbnail/sample.jpg
s3 wait thumbnails "thumbnails/holiday photos/plage été.jpg"

step "the event display got the function's reply"
grep -h 'com.example.thumbnail.created' "$work/display.log"

step "the broker's events (switchyard tail --from-beginning --no-follow)"
"$bin/switchyard" tail --from-beginning --no-follow

step "dead-letter demo: a corrupt .jpg"
printf 'this is not a JPEG' >"$work/broken.jpg"
s3 put photos broken.jpg "$work/broken.jpg"
for _ in $(seq 1 100); do
  # The function answers 422 for a corrupt image: the dead letter's status.
  "$bin/switchyard" dlq list --output json | grep -q '"status": 422' && break
  sleep 0.2
done
"$bin/switchyard" dlq list

step "fix the file, then redrive the dead letter"
s3 put photos broken.jpg examples/thumbnail/sample.jpg
"$bin/switchyard" dlq redrive --trigger make-thumbnails
s3 wait thumbnails thumbnails/broken.jpg
for _ in $(seq 1 50); do # the display prints the reply a moment after the thumbnail is written
  grep -q 'thumbnails/broken.jpg' "$work/display.log" && break
  sleep 0.1
done
grep -h 'thumbnails/broken.jpg' "$work/display.log" || true

step "done"
echo "thumbnails: $(s3 list thumbnails | tr '\n' ' ')"
if [ "$wait_at_end" = 1 ]; then
  cat <<'TXT'
Everything keeps running; try:
  target/release/switchyard tail                        # follow the broker's events
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test target/test-venv/bin/python \
    examples/thumbnail/s3.py put photos my.png some.png # upload another image
Ctrl-C stops everything.
TXT
  wait
fi
