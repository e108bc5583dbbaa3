-- wrk script for `python -m bench`: every request asks for ids picked at random from a file.
-- Arguments (after --): ids file, path template (each "{id}" becomes a random id), Authorization.
-- done() prints one line "BENCH_JSON {...}" with the counts and latency percentiles (µs).

local threads_started = 0

function setup(thread)
  threads_started = threads_started + 1
  thread:set("seed", threads_started)
end

local ids = {}
local template
local headers = {}

function init(args)
  for line in io.lines(args[1]) do
    ids[#ids + 1] = line
  end
  template = args[2]
  if args[3] and args[3] ~= "" then
    headers["Authorization"] = args[3]
  end
  math.randomseed(os.time() * 1000 + (seed or 0))
end

local function random_id()
  return ids[math.random(#ids)]
end

function request()
  local path = template:gsub("{id}", random_id)
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "non_2xx": %d, "timeouts": %d, "p50_us": %.1f, "p90_us": %.1f, ' ..
    '"p99_us": %.1f, "max_us": %.1f, "mean_us": %.1f}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
