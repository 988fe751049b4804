-- wrk script: POST /updates with valid plugin bodies for random devices of a pool.
--   BENCH_APP_ID      app to check in to (created beforehand)
--   BENCH_POOL        number of distinct devices (ids 0..POOL-1)
--   BENCH_RATE        total requests/s to pace at (0: as fast as possible)
--   BENCH_CONNECTIONS the -c given to wrk (to split BENCH_RATE between connections)
local app_id = os.getenv("BENCH_APP_ID") or "com.bench.app"
local pool = tonumber(os.getenv("BENCH_POOL") or "100000")
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local connections = tonumber(os.getenv("BENCH_CONNECTIONS") or "1")
local mean_delay_ms = 0
if rate > 0 then
  mean_delay_ms = connections * 1000.0 / rate
end

local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + seed)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local template = '{"platform":"android","device_id":"00000000-0000-4000-8000-%012x",' ..
  '"app_id":"' .. app_id .. '","custom_id":"","version_build":"1.0.0","version_code":"1",' ..
  '"version_os":"14","version_name":"1.0.0","plugin_version":"8.51.14","is_emulator":false,' ..
  '"is_prod":true,"install_source":"google_play","defaultChannel":""}'

function request()
  local body = string.format(template, math.random(0, pool - 1))
  return wrk.format(nil, "/updates", nil, body)
end

function delay()
  if mean_delay_ms <= 0 then
    return 0
  end
  -- Jitter so that connections do not fire in lockstep.
  return math.floor(mean_delay_ms * (0.5 + math.random()))
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
end
