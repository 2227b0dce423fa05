#!/usr/bin/env bash
# Drives sustained load through ccod and samples its resident memory, to show whether memory
# stays bounded as data is written. For each case it starts a fresh ccod against the mock
# upstream and runs wrk with bench/unique_body.lua for DURATION seconds. Every request is a
# cache miss, so it writes an analytics record and, with the cache on, a new cache entry.
# Every INTERVAL seconds the script prints the requests recorded so far (the sum of
# cco_requests_total from /metrics), the cache's stores and entries, the size of the data
# directory and VmRSS from /proc. After the load it samples on for at most DRAIN seconds,
# until ccod has recorded every request wrk sent. Everything listens on 127.0.0.1, and wrk
# stops after DURATION.
#
# Usage: [CASES="cache nocache"] [INTERVAL=5] [DRAIN=60] [CONNECTIONS=8] [CCOD_ARGS="..."]
#        [VARIANTS="name=/path/to/ccod ..."] bench/soak.sh [DURATION]
#
# VARIANTS runs every case once with each listed ccod binary, one after the other, so two
# builds are compared in one run. The default is the release build of this tree. CCOD_ARGS
# are passed to every ccod, for example "--cache-size 50".
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-60}
interval=${INTERVAL:-5}
drain=${DRAIN:-60}
connections=${CONNECTIONS:-8}
threads=$((connections < 2 ? connections : 2))
read -r -a cases <<<"${CASES:-cache nocache}"
read -r -a extra_args <<<"${CCOD_ARGS:-}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is missing: apt-get install curl" >&2; exit 1; }

# shellcheck source=bench/common.sh
source bench/common.sh
read -r -a variants <<<"${VARIANTS:-ccod=$bin/ccod}"

mock_port=18801 ccod_port=18802
"$bin"/cco-mock-upstream --port "$mock_port" --max-seconds 3600 --max-requests 100000000 \
    >/dev/null &
pids+=($!)
wait_port "$mock_port"

kib() { awk -v field="$2" '$1 == field { print $2 }' "/proc/$1/status"; }
mib() { echo "scale=1; $1 / 1024" | bc; }

# Prints "requests cache_stores cache_entries" from ccod's /metrics, or "- - -" when ccod
# sends no reply within 5 seconds, because the actors reply only after the messages queued
# before the request.
read_metrics() {
    curl -sf --max-time 5 "http://127.0.0.1:$ccod_port/metrics" | awk '
        /^cco_requests_total\{/ { requests += $NF }
        /^cco_cache_stores_total / { stores = $NF }
        /^cco_cache_entries / { entries = $NF }
        END { if (NR == 0) print "- - -"; else printf "%d %d %d\n", requests, stores, entries }
    '
}

# Prints one table row: seconds since the load started, metrics, data directory, RSS.
sample() {
    local requests stores entries
    read -r requests stores entries <<<"$(read_metrics)"
    printf "| %d | %s | %s | %s | %s | %s |\n" $((SECONDS - start)) "$requests" "$stores" "$entries" \
        "$(du -sm "$data" | cut -f1)" "$(mib "$(kib "$ccod_pid" VmRSS:)")"
}

# Runs one case with one ccod binary and prints its Markdown table.
soak() {
    local name=$1 path=$2 case=$3
    data="$work/$name-$case"
    local flags=()
    [ "$case" = nocache ] && flags+=(--no-cache)
    "$path" --port "$ccod_port" --data-dir "$data" --socket "$work/$name-$case.sock" \
        --anthropic-base-url "http://127.0.0.1:$mock_port" --log-level warn \
        "${flags[@]}" "${extra_args[@]}" 2>"$work/$name-$case.log" &
    ccod_pid=$!
    pids+=("$ccod_pid")
    wait_port "$ccod_port"
    sleep 1

    echo "### $name, $case (${extra_args[*]:-default settings}), $connections connections"
    echo
    echo "| seconds | requests recorded | cache stores | cache entries | data dir MiB | RSS MiB |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
    printf "| 0 | 0 | 0 | 0 | %s | %s |\n" "$(du -sm "$data" | cut -f1)" "$(mib "$(kib "$ccod_pid" VmRSS:)")"
    wrk -t"$threads" -c"$connections" -d"${duration}s" -s bench/unique_body.lua \
        "http://127.0.0.1:$ccod_port" >"$work/wrk.out" &
    local wrk_pid=$!
    pids+=("$wrk_pid")
    start=$SECONDS
    while kill -0 "$wrk_pid" 2>/dev/null; do
        sleep "$interval"
        sample
    done
    wait "$wrk_pid" || true
    local sent
    sent=$(awk '/requests in/ { print $1 }' "$work/wrk.out")
    # After the load, until ccod has recorded every request wrk sent or DRAIN seconds pass:
    # requests still queued in the actors' mailboxes show up here.
    local load_end=$SECONDS
    while [ $((SECONDS - load_end)) -lt "$drain" ]; do
        sleep "$interval"
        local row recorded
        row=$(sample)
        echo "$row"
        recorded=$(echo "$row" | cut -d'|' -f3 | tr -d ' ')
        # wrk does not count the requests still open when it stops, so ccod may record more.
        [ "$recorded" != - ] && [ "$recorded" -ge "$sent" ] && break
    done
    echo
    echo "wrk sent $sent requests in ${duration} s ($(awk '/Non-2xx/ { print $NF }' "$work/wrk.out" | grep . || echo 0) non-2xx);" \
        "RSS at the end $(mib "$(kib "$ccod_pid" VmRSS:)") MiB, peak $(mib "$(kib "$ccod_pid" VmHWM:)") MiB"
    echo
    kill "$ccod_pid"
    wait "$ccod_pid" 2>/dev/null || true
    rm -rf "$data"
}

for case in "${cases[@]}"; do
    for variant in "${variants[@]}"; do
        soak "${variant%%=*}" "${variant#*=}" "$case"
    done
done
