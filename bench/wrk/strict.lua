-- wrk script for bench/strict.py: replay a pool of pre-signed control-plane requests.
--
--   wrk -t1 -c32 -d5s --latency -s bench/wrk/strict.lua http://127.0.0.1:PORT -- POOL_FILE
--
-- wrk's Lua has no HMAC-SHA256, so bench/strict.py signs the requests beforehand (SigV4 header
-- signing, what botocore sends: Content-Type, User-Agent, X-Amz-Date, Authorization signing
-- content-type;host;x-amz-date, amz-sdk-invocation-id, amz-sdk-request) and writes them, complete
-- and byte-exact, to POOL_FILE, separated by NUL bytes. They stay valid for 5 minutes (the
-- server's clock-skew window), so the driver writes a fresh pool before every measurement.
-- request() cycles through the pool; every request in it names a different channel, so no two
-- consecutive requests carry the same signature.
--
-- done() prints one line "WRKJSON {...}" (latencies in microseconds), as bench/wrk/controlplane.lua.

local pool = {}
local n = 0
local i = 0

function init(args)
   local path = args[1]
   if not path then
      error("usage: -- POOL_FILE")
   end
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   local pos = 1
   while pos <= #data do
      local stop = string.find(data, "\0", pos, true)
      if not stop then
         stop = #data + 1
      end
      if stop > pos then
         n = n + 1
         pool[n] = string.sub(data, pos, stop - 1)
      end
      pos = stop + 1
   end
   if n == 0 then
      error("empty request pool " .. path)
   end
   -- Threads (if -t > 1) start at different places in the pool.
   i = math.random(0, n - 1)
end

function request()
   i = i + 1
   if i > n then
      i = 1
   end
   return pool[i]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, '
         .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "errors": {"connect": %d, "read": %d, '
         .. '"write": %d, "status": %d, "timeout": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout))
end
