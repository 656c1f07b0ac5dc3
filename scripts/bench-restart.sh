#!/usr/bin/env bash
# Restart to serving, the way docs/performance.md ("Restart after a million users,
# measured again") measured it: loads a fresh data directory with DISTINCT users through
# `colloquy-bench`, stops the server (SIGTERM), then restarts it ROUNDS times and prints
# how long each took to answer the webhook handshake, with its peak RSS. The first
# restart after the load replays sled's log since the last start; later ones do not.
#
#   cargo build --release --bins
#   scripts/bench-restart.sh [BINDIR]
#
# DISTINCT (default 1000000), ROUNDS (default 3). COLD=1 drops the page cache before
# each restart (needs root: writes /proc/sys/vm/drop_caches). SERVER=path/to/colloquy
# restarts another build on the same data (the load always uses BINDIR's server). Each
# stop's time (SIGTERM to exit) is printed too: a graceful stop folds sled's log into a
# snapshot, so it pays what the next start would otherwise replay.
set -euo pipefail

bin=${1:-target/release}
distinct=${DISTINCT:-1000000}
rounds=${ROUNDS:-3}
port=${PORT:-8180}; admin=$((port + 1)); graph=${GRAPH_PORT:-9999}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
export MESSENGER_APP_SECRET=bench-secret
handshake="http://127.0.0.1:$port/webhook?hub.mode=subscribe&hub.verify_token=bench&hub.challenge=1"

start_server() {
  MESSENGER_VERIFY_TOKEN=bench MESSENGER_ACCESS_TOKEN=bench \
    MESSENGER_GRAPH_URL=http://127.0.0.1:$graph/v21.0 \
    COLLOQUY_PAGE_SEND_RATE=0 COLLOQUY_DATA=$data/db \
    COLLOQUY_BIND=127.0.0.1:$port COLLOQUY_ADMIN_BIND=127.0.0.1:$admin RUST_LOG=warn \
    "$1" serve --flow thanks >>"$data/server.log" 2>&1 &
  server=$!
}

stop_server() {
  local asked
  asked=$(date +%s.%N)
  kill "$server"
  wait "$server" || true
  stopped_after=$(echo "$(date +%s.%N) - $asked" | bc)
}

start_server "$bin/colloquy"
for _ in $(seq 1 100); do curl -sf "$handshake" >/dev/null && break; sleep 0.1; done
"$bin/colloquy-bench" --target "http://127.0.0.1:$port/webhook" --graph-bind "127.0.0.1:$graph" \
  --flow thanks --pid "$server" --json --distinct "$distinct" --senders 128 --warmup 3 \
  | grep '^{' >"$data/load.json"
cut -c1-200 "$data/load.json"
# The load's own figures, beyond the first 200 characters: throughput and peak RSS.
grep -o '"events_per_s":[0-9.]*\|"rss_peak_mib":[0-9.]*' "$data/load.json" | tr '\n' ' '
echo
stop_server
printf 'stopped after %.3f s (SIGTERM to exit)\n' "$stopped_after"
echo "data directory: $(du -sk "$data/db" | cut -f1) KiB"

for round in $(seq 1 "$rounds"); do
  if [ -n "${COLD:-}" ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
  started=$(date +%s.%N)
  start_server "${SERVER:-$bin/colloquy}"
  until curl -sf "$handshake" >/dev/null; do
    kill -0 "$server" 2>/dev/null || { echo "the server exited: $data/server.log"; exit 1; }
    sleep 0.005
  done
  serving=$(date +%s.%N)
  printf 'restart %s: serving after %.3f s, %s\n' "$round" "$(echo "$serving - $started" | bc)" \
    "$(grep VmHWM /proc/$server/status | tr -s ' \t' ' ')"
  stop_server
  printf '  stopped after %.3f s\n' "$stopped_after"
done
