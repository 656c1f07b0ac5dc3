#!/usr/bin/env bash
# Capacity of a colloquy cluster on this machine (docs/cluster.md, "Capacity"): starts a
# local 3-server NATS cluster (scripts/nats-cluster.sh, in a fresh directory), NODES
# colloquy nodes (`serve --cluster`), and drives them all with one `colloquy-bench`
# (POSTs take turns among the nodes); prints the bench's JSON line.
#
#   cargo build --release --bins
#   NODES=3 scripts/bench-cluster.sh -- --senders 64 --duration 10 --warmup 2
set -euo pipefail

bin=${BIN:-target/release}
[ "${1:-}" = "--" ] && shift
nodes=${NODES:-1}
flow=${FLOW:-echo}
graph=${GRAPH_PORT:-9999}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; cp "$work"/node*.log "${LOGS:-/tmp}/" 2>/dev/null; rm -rf "$work"' EXIT
NATS_CLUSTER_DIR=$work/nats scripts/nats-cluster.sh >"$work/nats.out" 2>&1 &
pids+=($!)
urls=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
sleep 3
targets=()
for i in $(seq 1 "$nodes"); do
  port=$((8180 + 2 * i))
  MESSENGER_APP_SECRET=bench-secret MESSENGER_VERIFY_TOKEN=bench MESSENGER_ACCESS_TOKEN=bench \
    MESSENGER_GRAPH_URL=http://127.0.0.1:$graph/v21.0 COLLOQUY_PAGE_SEND_RATE=0 \
    COLLOQUY_DATA=$work/node$i COLLOQUY_BIND=127.0.0.1:$port \
    COLLOQUY_ADMIN_BIND=127.0.0.1:$((port + 1)) RUST_LOG=${RUST_LOG:-warn} \
    "$bin/colloquy" serve --flow "$flow" --cluster "$urls" --node "node$i" \
      --partitions "${PARTITIONS:-12}" >"$work/node$i.log" 2>&1 &
  pids+=($!)
  targets+=("http://127.0.0.1:$port/webhook")
done
for target in "${targets[@]}"; do
  for _ in $(seq 1 200); do
    curl -sf "$target?hub.mode=subscribe&hub.verify_token=bench&hub.challenge=1" >/dev/null && break
    sleep 0.1
  done
done
sleep "${SETTLE:-4}" # the partitions spread over the nodes
MESSENGER_APP_SECRET=bench-secret "$bin/colloquy-bench" \
  --target "$(IFS=,; echo "${targets[*]}")" --graph-bind "127.0.0.1:$graph" \
  --flow "$flow" --json "$@"
