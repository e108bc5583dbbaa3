-- wrk script for `python -m bench.chaos`: random ids from a file (every one exists, so any 404 is
-- a false one), answers counted by status. Arguments (after --): ids file, path template
-- ("{id}" becomes a random id), Authorization. done() prints "CHAOS_JSON {...}".

local threads = {}

function setup(thread)
  thread:set("seed", #threads + 1)
  table.insert(threads, thread)
end

local ids = {}
local template
local headers = {}
statuses = {}

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

function request()
  local path = template:gsub("{id}", function() return ids[math.random(#ids)] end)
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    parts[#parts + 1] = string.format('"%d": %d', status, count)
  end
  local errors = summary.errors
  io.write(string.format(
    'CHAOS_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %.1f, "p99_us": %.1f, "max_us": %.1f, "statuses": {%s}}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, ", ")))
end
