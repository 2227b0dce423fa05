#!/usr/bin/env bash
# Measures what ccod adds to a request, side by side in one run: the mock upstream alone,
# ccod on the cache-miss path with the cache on and with --no-cache, and ccod on cache
# hits. Builds in release mode, starts everything on 127.0.0.1, drives load with wrk
# (Debian package 'wrk'), and prints a Markdown table; the per-round lines go to stderr.
# Usage: [ROUNDS=3] [CASES="direct miss_cache miss_nocache hit"] bench/run.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-8}
rounds=${ROUNDS:-3}
threads=$((connections < 2 ? connections : 2))
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

cargo build --release -q -p ccod -p cco-tests
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

mock_port=18601 cache_port=18602 nocache_port=18603
"$bin"/cco-mock-upstream --port "$mock_port" --max-seconds 1800 --max-requests 100000000 >/dev/null &
pids+=($!)
wait_port "$mock_port"
start_ccod() {
    local port=$1 name=$2
    shift 2
    "$bin"/ccod --port "$port" --data-dir "$work/$name" --socket "$work/$name.sock" \
        --anthropic-base-url "http://127.0.0.1:$mock_port" --log-level warn "$@" \
        2>"$work/$name.log" &
    pids+=($!)
    wait_port "$port"
}
start_ccod "$cache_port" cache
start_ccod "$nocache_port" nocache --no-cache

# Prints "requests/s p50 p99" in milliseconds from wrk's --latency report.
measure() {
    local port=$1 script=$2
    wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s "bench/$script" \
        "http://127.0.0.1:$port" >"$work/wrk.out"
    awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /^Requests\/sec/ { rps = $2 }
        /Non-2xx/ { bad = $NF }
        END { printf "%s %.3f %.3f %s\n", rps, p50, p99, (bad == "" ? 0 : bad) }
    ' "$work/wrk.out"
    grep -q "^Requests/sec" "$work/wrk.out" || { cat "$work/wrk.out" >&2; exit 1; }
}

declare -A sum_rps sum_p50 sum_p99 bad
read -r -a cases <<<"${CASES:-direct miss_cache miss_nocache hit}"
for case in "${cases[@]}"; do sum_rps[$case]=0 sum_p50[$case]=0 sum_p99[$case]=0 bad[$case]=0; done
for round in $(seq 1 "$rounds"); do
    for case in "${cases[@]}"; do
        case $case in
            direct) result=$(measure "$mock_port" unique_body.lua) ;;
            miss_cache) result=$(measure "$cache_port" unique_body.lua) ;;
            miss_nocache) result=$(measure "$nocache_port" unique_body.lua) ;;
            hit) result=$(measure "$cache_port" same_body.lua) ;;
        esac
        read -r rps p50 p99 non2xx <<<"$result"
        echo "round $round $case: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx" >&2
        sum_rps[$case]=$(echo "${sum_rps[$case]} + $rps" | bc -l)
        sum_p50[$case]=$(echo "${sum_p50[$case]} + $p50" | bc -l)
        sum_p99[$case]=$(echo "${sum_p99[$case]} + $p99" | bc -l)
        bad[$case]=$((bad[$case] + non2xx))
    done
done

mean() { printf "%.3f" "$(echo "$1 / $rounds" | bc -l)"; }
echo "| path | requests/s | p50 ms | p99 ms | p50 added ms | p99 added ms | non-2xx |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
direct_p50=$(mean "${sum_p50[direct]:-0}")
direct_p99=$(mean "${sum_p99[direct]:-0}")
for case in "${cases[@]}"; do
    p50=$(mean "${sum_p50[$case]}")
    p99=$(mean "${sum_p99[$case]}")
    printf "| %s | %.0f | %s | %s | %.3f | %.3f | %s |\n" "$case" \
        "$(mean "${sum_rps[$case]}")" "$p50" "$p99" \
        "$(echo "$p50 - $direct_p50" | bc -l)" "$(echo "$p99 - $direct_p99" | bc -l)" "${bad[$case]}"
done
