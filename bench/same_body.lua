-- wrk script: the same POST /v1/messages every time, so after the first request every
-- request through ccod is a cache hit.
wrk.method = "POST"
wrk.path = "/v1/messages"
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "sk-ant-bench-key"
-- BENCH_BODY_KB adds that many KiB of words to the message, for a body the size of a coding
-- agent's requests.
local filler = string.rep("context ", 128 * (tonumber(os.getenv("BENCH_BODY_KB") or "") or 0))
wrk.body = '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"the same question '
  .. filler .. '"}]}'

-- With BENCH_DELAY_MS set, each connection waits that many milliseconds after each
-- response, which keeps the load below what the server under test sustains.
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause then
  function delay()
    return pause
  end
end

-- Reports what wrk's own summary leaves out: p99.9 latency and the request count.
function done(summary, latency, requests)
  io.write(string.format("p999_us %d\n", latency:percentile(99.9)))
  io.write(string.format("requests %d\n", summary.requests))
end
