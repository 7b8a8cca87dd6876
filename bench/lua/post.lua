-- POSTs a form to BENCH_PATH with BENCH_AUTH as the Authorization header.
-- The body is BENCH_BODY, or, with BENCH_BODIES, one line of that file per
-- request: single-use credentials, split between the threads so that no
-- line is sent twice. Prints one JSON line with the figures when done.

local path = os.getenv("BENCH_PATH")
local auth = os.getenv("BENCH_AUTH")
local body = os.getenv("BENCH_BODY")
local bodies_file = os.getenv("BENCH_BODIES")

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
  if auth and auth ~= "" then headers["Authorization"] = auth end
  bodies = nil
  exhausted = 0
  if bodies_file and bodies_file ~= "" then
    bodies = {}
    local n = 0
    for line in io.lines(bodies_file) do
      if n % tonumber(os.getenv("BENCH_THREADS")) == id then table.insert(bodies, line) end
      n = n + 1
    end
    next_body = 1
  end
end

function request()
  local b = body
  if bodies then
    b = bodies[next_body]
    if b == nil then
      -- Out of single-use credentials: reuse the last, which then fails and
      -- is counted as an error.
      exhausted = exhausted + 1
      b = bodies[#bodies]
    else
      next_body = next_body + 1
    end
  end
  return wrk.format("POST", path, headers, b)
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"errors":%d,'
      .. '"error_kinds":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors,
    e.connect, e.read, e.write, e.status, e.timeout))
end
