#!/usr/bin/env bash
# Measures what ccod adds to a request, side by side in one run: the mock upstream alone,
# ccod on the cache-miss path with the cache on, with --no-cache, and with --no-cache
# --no-analytics, and ccod on cache hits. Builds in release mode, starts everything on 127.0.0.1, drives load with wrk
# (Debian package 'wrk'), and prints a Markdown table; the per-round lines go to stderr.
# Usage: [ROUNDS=3] [CASES="direct miss_cache miss_nocache miss_bare hit"] [BENCH_DELAY_MS=N]
#        [BENCH_BODY_KB=N] bench/run.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-8}
rounds=${ROUNDS:-3}
threads=$((connections < 2 ? connections : 2))
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

# shellcheck source=bench/common.sh
source bench/common.sh

mock_port=18601 cache_port=18602 nocache_port=18603 bare_port=18604
"$bin"/cco-mock-upstream --port "$mock_port" --max-seconds 1800 --max-requests 100000000 >/dev/null &
pids+=($!)
wait_port "$mock_port"
ccod_pids=()
start_ccod() {
    local port=$1 name=$2
    shift 2
    "$bin"/ccod --port "$port" --data-dir "$work/$name" --socket "$work/$name.sock" \
        --anthropic-base-url "http://127.0.0.1:$mock_port" --log-level warn "$@" \
        2>"$work/$name.log" &
    pids+=($!)
    ccod_pids+=($!)
    wait_port "$port"
}
start_ccod "$cache_port" cache
cache_pid=${ccod_pids[0]}
start_ccod "$nocache_port" nocache --no-cache
nocache_pid=${ccod_pids[1]}
start_ccod "$bare_port" bare --no-cache --no-analytics
bare_pid=${ccod_pids[2]}

# Prints "requests/s p50 p99 p99.9 non-2xx cpu_us_per_request", latencies in milliseconds.
# PID is the ccod whose CPU time is counted, or 0 for none.
measure() {
    local port=$1 script=$2 pid=$3
    local before=0 after=0
    [ "$pid" != 0 ] && before=$(cpu_ticks "$pid")
    wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s "bench/$script" \
        "http://127.0.0.1:$port" >"$work/wrk.out"
    [ "$pid" != 0 ] && after=$(cpu_ticks "$pid")
    grep -q "^Requests/sec" "$work/wrk.out" || { cat "$work/wrk.out" >&2; exit 1; }
    awk -v ticks=$((after - before)) -v hz="$hz" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /^p999_us/ { p999 = $2 / 1000 }
        /^requests / { count = $2 }
        /^Requests\/sec/ { rps = $2 }
        /Non-2xx/ { bad = $NF }
        END {
            cpu = (count > 0) ? ticks * 1000000 / hz / count : 0
            printf "%s %.3f %.3f %.3f %s %.1f\n", rps, p50, p99, p999, (bad == "" ? 0 : bad), cpu
        }
    ' "$work/wrk.out"
}

declare -A sum_rps sum_p50 sum_p99 sum_p999 sum_cpu bad
read -r -a cases <<<"${CASES:-direct miss_cache miss_nocache miss_bare hit}"
for case in "${cases[@]}"; do
    sum_rps[$case]=0 sum_p50[$case]=0 sum_p99[$case]=0 sum_p999[$case]=0 sum_cpu[$case]=0
    bad[$case]=0
done
for round in $(seq 1 "$rounds"); do
    for case in "${cases[@]}"; do
        case $case in
            direct) result=$(measure "$mock_port" unique_body.lua 0) ;;
            miss_cache) result=$(measure "$cache_port" unique_body.lua "$cache_pid") ;;
            miss_nocache) result=$(measure "$nocache_port" unique_body.lua "$nocache_pid") ;;
            miss_bare) result=$(measure "$bare_port" unique_body.lua "$bare_pid") ;;
            hit) result=$(measure "$cache_port" same_body.lua "$cache_pid") ;;
        esac
        read -r rps p50 p99 p999 non2xx cpu <<<"$result"
        echo "round $round $case: $rps req/s, p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms, cpu $cpu us/request, non-2xx $non2xx" >&2
        sum_rps[$case]=$(echo "${sum_rps[$case]} + $rps" | bc -l)
        sum_p50[$case]=$(echo "${sum_p50[$case]} + $p50" | bc -l)
        sum_p99[$case]=$(echo "${sum_p99[$case]} + $p99" | bc -l)
        sum_p999[$case]=$(echo "${sum_p999[$case]} + $p999" | bc -l)
        sum_cpu[$case]=$(echo "${sum_cpu[$case]} + $cpu" | bc -l)
        bad[$case]=$((bad[$case] + non2xx))
    done
done

mean() { printf "%.3f" "$(echo "$1 / $rounds" | bc -l)"; }
echo "| path | requests/s | p50 ms | p99 ms | p99.9 ms | p50 added ms | p99 added ms | ccod CPU us/request | non-2xx |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
direct_p50=$(mean "${sum_p50[direct]:-0}")
direct_p99=$(mean "${sum_p99[direct]:-0}")
for case in "${cases[@]}"; do
    p50=$(mean "${sum_p50[$case]}")
    p99=$(mean "${sum_p99[$case]}")
    printf "| %s | %.0f | %s | %s | %s | %.3f | %.3f | %.1f | %s |\n" "$case" \
        "$(mean "${sum_rps[$case]}")" "$p50" "$p99" "$(mean "${sum_p999[$case]}")" \
        "$(echo "$p50 - $direct_p50" | bc -l)" "$(echo "$p99 - $direct_p99" | bc -l)" \
        "$(mean "${sum_cpu[$case]}")" "${bad[$case]}"
done
peak() { awk '$1 == "VmHWM:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
echo
echo "peak RSS: ccod with cache $(peak "$cache_pid") MiB, ccod --no-cache $(peak "$nocache_pid") MiB," \
    "ccod --no-cache --no-analytics $(peak "$bare_pid") MiB"

# ccod's own measure of the time it spent on each request (cco_added_latency_seconds), which
# leaves out the waits for the upstream and for the scheduler to run ccod's threads.
added_mean() {
    curl -s "http://127.0.0.1:$1/metrics" | awk -v cache="$2" '
        $1 ~ "^cco_added_latency_seconds_sum\\{cache=\"" cache "\"" { sum += $2 }
        $1 ~ "^cco_added_latency_seconds_count\\{cache=\"" cache "\"" { count += $2 }
        END { if (count > 0) printf "%.1f", sum / count * 1000000; else printf "-" }'
}
echo "mean time ccod spent per request by its own metric, in us: miss with cache" \
    "$(added_mean "$cache_port" miss), miss --no-cache $(added_mean "$nocache_port" bypass)," \
    "miss --no-cache --no-analytics $(added_mean "$bare_port" bypass), hit $(added_mean "$cache_port" hit)"
