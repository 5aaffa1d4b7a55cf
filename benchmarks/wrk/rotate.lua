-- wrk script: rotate pre-created session cookies, one per request, and print
-- the summary as one JSON line (latencies in microseconds).
--   BENCH_COOKIES  file with one "Cookie:" header value per line (may be empty:
--                  then requests carry no cookie)
--   BENCH_PATH     request path, e.g. /inc
local cookies = {}
local path = os.getenv("BENCH_PATH") or "/"
local index = 0

function init(args)
  local file = os.getenv("BENCH_COOKIES")
  if file and file ~= "" then
    for line in io.lines(file) do
      if line ~= "" then cookies[#cookies + 1] = line end
    end
  end
  -- threads start at different offsets so they do not send the same session
  index = (wrk.thread and math.random(0, 1000) or 0)
end

function request()
  index = index + 1
  if #cookies == 0 then
    return wrk.format("GET", path)
  end
  return wrk.format("GET", path, { ["Cookie"] = cookies[(index % #cookies) + 1] })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %.1f, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
