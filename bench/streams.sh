#!/usr/bin/env bash
# Measures streaming through ccod against the mock upstream alone, side by side: time to
# first byte and delay between events for STREAMS concurrent streams, ccod's resident
# memory idle, with every stream open, and at peak, and its CPU time per stream.
# Everything listens on 127.0.0.1. Usage: bench/streams.sh [STREAMS] [EVENT_DELAY_MS]
set -euo pipefail
cd "$(dirname "$0")/.."
streams=${1:-1000}
delay_ms=${2:-50}
ulimit -n 16384

# shellcheck source=bench/common.sh
source bench/common.sh
kib() { awk -v field="$2" '$1 == field { print $2 }' "/proc/$1/status"; }

mock_port=18701 ccod_port=18702
"$bin"/cco-mock-upstream --port "$mock_port" --max-seconds 900 \
    --stream-chunk-delay-ms "$delay_ms" >/dev/null &
pids+=($!)
wait_port "$mock_port"
"$bin"/ccod --port "$ccod_port" --data-dir "$work/data" --socket "$work/ccod.sock" \
    --anthropic-base-url "http://127.0.0.1:$mock_port" --log-level warn \
    --max-connections $((streams + 64)) 2>"$work/ccod.log" &
ccod_pid=$!
pids+=($ccod_pid)
wait_port "$ccod_port"
sleep 1
idle_kib=$(kib "$ccod_pid" VmRSS:)

echo "## direct to the mock, $streams streams, $delay_ms ms between events"
"$bin"/cco-stream-load --addr "127.0.0.1:$mock_port" --streams "$streams"
echo
echo "## through ccod, $streams streams"
ticks_before=$(cpu_ticks "$ccod_pid")
"$bin"/cco-stream-load --addr "127.0.0.1:$ccod_port" --streams "$streams" --pid "$ccod_pid"
ticks_after=$(cpu_ticks "$ccod_pid")
echo "ccod RSS idle: $(echo "scale=1; $idle_kib / 1024" | bc) MiB"
echo "ccod RSS peak: $(echo "scale=1; $(kib "$ccod_pid" VmHWM:) / 1024" | bc) MiB"
echo "ccod CPU per stream: $(echo "scale=3; ($ticks_after - $ticks_before) * 1000 / $hz / $streams" | bc) ms"
