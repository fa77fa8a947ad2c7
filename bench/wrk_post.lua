-- wrk script: POST canvas PNGs (raw image/png bodies) from $BENCH_INPUTS, cycling through
-- them, to $BENCH_PATH; prints one "BENCH_JSON {...}" line with the totals at the end.
local folder = os.getenv("BENCH_INPUTS")
local path = os.getenv("BENCH_PATH") or "/api/predictions"
local requests = {}
local next_index = 0

function init(args)
  local i = 1
  while true do
    local file = io.open(folder .. "/" .. i .. ".png", "rb")
    if file == nil then break end
    local body = file:read("*all")
    file:close()
    requests[i] = wrk.format("POST", path, {["Content-Type"] = "image/png"}, body)
    i = i + 1
  end
  if #requests == 0 then error("no PNG files in " .. tostring(folder)) end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"latency_p50_us":%d,' ..
    '"latency_p99_us":%d,"latency_mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
