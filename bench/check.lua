-- wrk script: counts non-200 responses and tallies the distinct bodies of
-- 200 responses, so that the benchmark can check every body against the
-- messages it wrote.  done() prints the result in the line format that
-- bench/load.py parses.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  distinct = 0
  overflow = 0
  non200 = 0
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    return
  end
  local n = bodies[body]
  if n then
    bodies[body] = n + 1
  elseif distinct < 20000 then
    bodies[body] = 1
    distinct = distinct + 1
  else
    overflow = overflow + 1
  end
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write("bench-result\n")
  io.write(string.format("requests %.0f\n", summary.requests))
  io.write(string.format("duration_us %.0f\n", summary.duration))
  io.write(string.format("socket_errors %.0f\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("latency_us %.0f %.0f %.0f\n",
    latency:percentile(50), latency:percentile(99), latency.max))
  for _, t in ipairs(threads) do
    io.write(string.format("non200 %.0f\n", t:get("non200")))
    io.write(string.format("unrecorded %.0f\n", t:get("overflow")))
    for body, n in pairs(t:get("bodies")) do
      io.write(string.format("body %.0f %s\n", n, hex(body)))
    end
  end
  io.write("end\n")
end
