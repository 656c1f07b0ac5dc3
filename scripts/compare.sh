#!/usr/bin/env bash
# Two server builds under one load, interleaved, the way docs/performance.md compares a
# change with the build before it: on a shared 2-core machine run-to-run noise is 5-10 %,
# and the machine's speed drifts over minutes, so one run of each back to back says
# little. Each round runs both builds through scripts/bench.sh (same load generator,
# fresh data directory each run), alternating which goes first; then a table of every
# run and the medians.
#
#   cargo build --release --bins && mkdir -p /tmp/before && cp target/release/colloquy /tmp/before/
#   ... change, build again ...
#   scripts/compare.sh -n 3 /tmp/before/colloquy target/release/colloquy -- \
#     --spike-rate 2000 --spike-duration 20 --grace 60
#
# A and B are `colloquy` binaries; the load generator is BINDIR's `colloquy-bench`
# (BINDIR defaults to target/release). Server settings come from the environment, as
# for scripts/bench.sh; A_ENV / B_ENV add settings to one side only, for comparing
# settings of one build:
#   A_ENV="COLLOQUY_COMMIT_LINGER_US=4000" scripts/compare.sh bin bin -- --senders 16 ...
# Needs python3 for the table. Never run it beside a build or a test run: both take
# the CPU the figures measure.
set -euo pipefail

usage() {
  echo "usage: scripts/compare.sh [-n ROUNDS] A_COLLOQUY B_COLLOQUY -- BENCH_ARGS..." >&2
  exit 2
}

rounds=3
if [ "${1:-}" = "-n" ]; then
  [ $# -ge 2 ] || usage
  rounds=$2
  shift 2
fi
[ $# -ge 3 ] && [ "$3" = "--" ] || usage
a=$1 b=$2
shift 3
case "$rounds" in '' | *[!0-9]* | 0) echo "compare.sh: -n wants a positive count, not '$rounds'" >&2; exit 2 ;; esac
for server in "$a" "$b"; do
  [ -x "$server" ] || { echo "compare.sh: '$server' is not an executable colloquy" >&2; exit 2; }
done
bindir=${BINDIR:-target/release}
[ -x "$bindir/colloquy-bench" ] || {
  echo "compare.sh: no colloquy-bench in '$bindir' (cargo build --release --bins, or set BINDIR)" >&2
  exit 2
}
command -v python3 >/dev/null || { echo "compare.sh: python3 is needed for the table" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
results=$(mktemp)
trap 'rm -f "$results"' EXIT

# One run of one side: its JSON line, labelled, appended to the results.
run_side() {
  local label=$1 server=$2 extra_env=$3 out
  shift 3
  out=$(env $extra_env SERVER="$server" "$here/bench.sh" "$bindir" -- "$@" 2>/dev/null | grep '^{' || true)
  if [ -z "$out" ]; then
    echo "compare.sh: run of $label gave no result (see scripts/bench.sh alone)" >&2
    out='{}'
  fi
  printf '%s\t%s\n' "$label" "$out" >>"$results"
  echo "  $label done" >&2
}

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  if [ $((round % 2)) -eq 1 ]; then
    run_side A "$a" "${A_ENV:-}" "$@"
    run_side B "$b" "${B_ENV:-}" "$@"
  else
    run_side B "$b" "${B_ENV:-}" "$@"
    run_side A "$a" "${A_ENV:-}" "$@"
  fi
done

python3 - "$results" <<'PYTHON'
import json, statistics, sys

rows = []
for line in open(sys.argv[1]):
    label, text = line.rstrip("\n").split("\t", 1)
    rows.append((label, json.loads(text)))

def figures(d):
    if not d:
        return None
    server = d.get("server", {})
    spike = d.get("spike") or {}
    # A spike's own figure covers the spike and its drain; otherwise the measured window.
    cpu = spike.get("cpu_us_per_reply")
    if cpu is None:
        cpu = server.get("cpu_us_per_reply")
    return {
        "ok": d.get("ok"),
        "events/s": d.get("events_per_s"),
        "replies/s": d.get("replies_per_s"),
        "cpu us/reply": cpu,
        "p50 ms": d.get("e2e_ms", {}).get("p50"),
        "p99 ms": d.get("e2e_ms", {}).get("p99"),
        "rss MiB": server.get("rss_peak_mib"),
    }

def cell(column, value):
    if value is None:
        return f"{'-':>14}"
    return f"{value:>14.2f}" if column.endswith("ms") else f"{value:>14.1f}"

columns = ["events/s", "replies/s", "cpu us/reply", "p50 ms", "p99 ms", "rss MiB"]
print("side  ok    " + "".join(f"{c:>14}" for c in columns))
for label, d in rows:
    f = figures(d)
    if f is None:
        print(f"{label:<5} failed")
        continue
    cells = "".join(cell(c, f[c]) for c in columns)
    print(f"{label:<5} {str(f['ok']):<5} {cells}")
print()
for side in ("A", "B"):
    got = [figures(d) for label, d in rows if label == side]
    got = [f for f in got if f]
    medians = []
    for c in columns:
        values = [f[c] for f in got if f[c] is not None]
        medians.append(cell(c, statistics.median(values) if values else None))
    oks = all(f["ok"] for f in got) and len(got) > 0
    print(f"{side + ' median':<12}" + "".join(medians) + ("" if oks else "  (not every run ok)"))
sys.exit(0 if all(figures(d) and figures(d)["ok"] for _, d in rows) else 1)
PYTHON
