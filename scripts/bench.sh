#!/usr/bin/env bash
# One benchmark run, the way docs/performance.md's figures were taken: starts
# `colloquy serve` on a fresh data directory, drives it with `colloquy-bench` (which
# serves the mock Graph API), then prints the bench's JSON line and the committer's
# counters from /metrics, and removes the data directory.
#
#   cargo build --release --bins
#   scripts/bench.sh [BINDIR] -- --senders 128 --duration 10 --warmup 2
#
# BINDIR defaults to target/release. Extra server settings come from the environment
# (e.g. COLLOQUY_CACHE_MB=16 scripts/bench.sh). Copy the binaries elsewhere to compare
# two builds back to back: run-to-run noise on a shared 2-core machine is 5-10 %.
# SERVER=path/to/colloquy runs that server with BINDIR's bench (to compare servers with
# one load generator). The bench reads the server's /metrics during the run.
#
# PAGES=N serves N pages (ids 1000, 1001, ...) of one app from a pages file, and the
# bench spreads its senders over them (docs/performance.md, "Many pages"):
#   PAGES=3 scripts/bench.sh -- --senders 64 --duration 10
#
# The overload spike (docs/performance.md, "Overload"): 5,000 new users/s for 20 s,
# refused POSTs redelivered after their Retry-After:
#   scripts/bench.sh -- --spike-rate 5000 --spike-duration 20 --grace 60
#
# REFERENCE=1 runs the reference bot instead of colloquy (`colloquy-bench
# --reference-bot`: signature check, JSON, 200 and one Send API call per message, no
# store): the floor colloquy's CPU per reply is measured against (docs/performance.md).
set -euo pipefail

bin=target/release
if [ $# -gt 0 ] && [ "$1" != "--" ]; then bin=$1; shift; fi
[ "${1:-}" = "--" ] && shift
flow=${FLOW:-thanks}
port=${PORT:-8180}; admin=$((port + 1)); graph=${GRAPH_PORT:-9999}

data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
# A secret of this run only: a POST of an earlier run that still reaches the port (a
# load generator's connection the kernel kept retransmitting after its process exited,
# accepted by this run's listener through a SYN cookie) fails the signature check
# instead of being taken as an event of this run (docs/performance.md, "Stray replies").
secret=bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
export MESSENGER_APP_SECRET=$secret
page_args=()
if [ -n "${PAGES:-}" ]; then
  printf '[apps.bench]\nsecret = "%s"\nverify_token = "bench"\n' "$secret" >"$data/pages.toml"
  ids=()
  for i in $(seq 0 $((PAGES - 1))); do
    ids+=($((1000 + i)))
    printf '\n[[pages]]\nid = "%s"\napp = "bench"\naccess_token = "bench-%s"\n' \
      $((1000 + i)) "$i" >>"$data/pages.toml"
  done
  export COLLOQUY_PAGES=$data/pages.toml
  page_args=(--page-id "$(IFS=,; echo "${ids[*]}")")
fi
metrics=(--metrics "http://127.0.0.1:$admin/metrics")
if [ -n "${REFERENCE:-}" ]; then
  MESSENGER_VERIFY_TOKEN=bench MESSENGER_ACCESS_TOKEN=bench "$bin/colloquy-bench" \
    --reference-bot "127.0.0.1:$port" --reference-graph "http://127.0.0.1:$graph/v21.0" \
    >"$data/server.log" 2>&1 &
  metrics=()
else
  MESSENGER_VERIFY_TOKEN=bench MESSENGER_ACCESS_TOKEN=bench \
    MESSENGER_GRAPH_URL=http://127.0.0.1:$graph/v21.0 \
    COLLOQUY_PAGE_SEND_RATE=${COLLOQUY_PAGE_SEND_RATE:-0} COLLOQUY_DATA=$data/db \
    COLLOQUY_BIND=127.0.0.1:$port COLLOQUY_ADMIN_BIND=127.0.0.1:$admin RUST_LOG=${RUST_LOG:-warn} \
    "${SERVER:-$bin/colloquy}" serve --flow "$flow" >"$data/server.log" 2>&1 &
fi
server=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/webhook?hub.mode=subscribe&hub.verify_token=bench&hub.challenge=1" \
    >/dev/null && break
  sleep 0.1
done

status=0
"$bin/colloquy-bench" --target "http://127.0.0.1:$port/webhook" --graph-bind "127.0.0.1:$graph" \
  --flow "$flow" --pid "$server" "${metrics[@]}" --json \
  "${page_args[@]}" "$@" || status=$?
curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^colloquy_(store_(commit|cache)|webhook_(connections|moves|on_engine))' || true
kill "$server"
wait "$server" || true
exit $status
