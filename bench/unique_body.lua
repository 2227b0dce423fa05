-- wrk script: POST /v1/messages with a body that differs on every request, so each request
-- through ccod is a cache miss. Each thread numbers its requests from its own id.
local thread_counter = 0

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

function init(args)
  sequence = 0
  wrk.method = "POST"
  wrk.headers["content-type"] = "application/json"
  wrk.headers["anthropic-version"] = "2023-06-01"
  wrk.headers["x-api-key"] = "sk-ant-bench-key"
end

-- BENCH_BODY_KB adds that many KiB of words to each message, for bodies the size of a
-- coding agent's requests.
local filler = string.rep("context ", 128 * (tonumber(os.getenv("BENCH_BODY_KB") or "") or 0))

function request()
  sequence = sequence + 1
  local body = string.format(
    '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"bench %d-%d %s"}]}',
    thread_id, sequence, filler)
  return wrk.format(nil, "/v1/messages", nil, body)
end

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
