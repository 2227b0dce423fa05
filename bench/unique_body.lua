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

function request()
  sequence = sequence + 1
  local body = string.format(
    '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"bench %d-%d"}]}',
    thread_id, sequence)
  return wrk.format(nil, "/v1/messages", nil, body)
end
