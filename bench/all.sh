#!/usr/bin/env bash
# Runs every proxy benchmark in one go and prints one Markdown report: the machine and the
# commit, the overhead tables under saturation and under a paced load, then 1,000
# concurrent streams. Everything listens on 127.0.0.1 and stops by itself.
# Usage: [ROUNDS=3] bench/all.sh [SECONDS_PER_ROUND]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
memory=$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
system=$(. /etc/os-release && echo "$PRETTY_NAME")

echo "# ccod benchmark report"
echo
echo "- date: $(date -u '+%F %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "- machine: $(nproc) CPUs ($model), $memory GiB, $system, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- load generator: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "- command: ROUNDS=${ROUNDS:-3} bench/all.sh $seconds"
echo
echo "## Saturated: 8 connections, no pause"
echo
bench/run.sh "$seconds" 8
echo
echo "## Paced: 4 connections, each pausing 1 ms after every response"
echo
BENCH_DELAY_MS=1 bench/run.sh "$seconds" 4
echo
echo "## Streaming: 1,000 concurrent streams, 50 ms between events"
echo
bench/streams.sh 1000 50
