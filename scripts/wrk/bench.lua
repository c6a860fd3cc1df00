-- wrk script of the serving benchmark. Args `first count`: GET /users/user-N/recommendations?k=50
-- for N cycling over [first, first + count), counting answers that came from the cache; no args:
-- GET /health/live (the HTTP round trip alone). done() prints one JSON line for bench_serve.py.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  first, count = tonumber(args[1]), tonumber(args[2])
  sent, cached, failed = 0, 0, 0
end

function request()
  if first == nil then
    return wrk.format("GET", "/health/live")
  end
  local user = first + (sent % count)
  sent = sent + 1
  return wrk.format("GET", "/users/user-" .. user .. "/recommendations?k=50")
end

function response(status, headers, body)
  if status ~= 200 then
    failed = failed + 1
  elseif string.find(body, '"from_cache":true', 1, true) then
    cached = cached + 1
  end
end

function done(summary, latency, requests)
  local total_cached, total_failed = 0, 0
  for _, thread in ipairs(threads) do
    total_cached = total_cached + thread:get("cached")
    total_failed = total_failed + thread:get("failed")
  end
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "p50_us": %d, "p95_us": %d, "p99_us": %d, "cached": %d, "failed": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), total_cached, total_failed,
    errors.connect + errors.read + errors.write + errors.timeout))
end
