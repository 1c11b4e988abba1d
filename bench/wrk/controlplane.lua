-- wrk script for bench/controlplane.py: POST requests shaped like botocore's for one operation.
--
--   wrk -t1 -c32 -d5s --latency -s bench/wrk/controlplane.lua http://127.0.0.1:PORT -- OP BASE_MS COUNT
--
-- OP       describe  -> POST /describeSignalingChannel      {"ChannelName": "bench-NNNNN"}
--          endpoint  -> POST /getSignalingChannelEndpoint   {"ChannelARN": ..., "SingleMaster...": ...}
--          trivial   -> POST /trivial with the describe body (the baseline server ignores it)
-- BASE_MS  creation time (epoch ms) of channel bench-00000; channel i was created at BASE_MS + i,
--          so its ARN is arn:aws:kinesisvideo:us-east-1:000000000000:channel/bench-<i>/<BASE_MS + i>
-- COUNT    number of seeded channels; every request picks one of them at random
--
-- done() prints one line "WRKJSON {...}" with exact figures (latencies in microseconds) for the
-- driver to parse; wrk's own --latency table is printed as well.

local REGION = "us-east-1"
local ACCOUNT = "000000000000"

local op, base_ms, count, path

function init(args)
   op = args[1] or "describe"
   base_ms = tonumber(args[2] or "1700000000000")
   count = tonumber(args[3] or "10000")
   if op == "describe" then
      path = "/describeSignalingChannel"
   elseif op == "endpoint" then
      path = "/getSignalingChannelEndpoint"
   elseif op == "trivial" then
      path = "/trivial"
   else
      error("unknown op " .. tostring(op))
   end
   math.randomseed(os.time())

   local now = os.time()
   local amz_date = os.date("!%Y%m%dT%H%M%SZ", now)
   local day = os.date("!%Y%m%d", now)
   -- What botocore sends for a rest-json kinesisvideo call (the signature is not checked in open
   -- mode; the credential scope is parsed for the region).
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["User-Agent"] = "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux lang/python#3.11 cfg/retry-mode#legacy Botocore/1.34.0"
   wrk.headers["X-Amz-Date"] = amz_date
   wrk.headers["amz-sdk-invocation-id"] = "5d0a6a38-2f5c-4c1e-9a49-6f8f0f7f0b1e"
   wrk.headers["amz-sdk-request"] = "attempt=1; max=3"
   wrk.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/" .. day .. "/" .. REGION
      .. "/kinesisvideo/aws4_request, SignedHeaders=content-type;host;x-amz-date, "
      .. "Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
end

function request()
   local i = math.random(0, count - 1)
   local name = string.format("bench-%05d", i)
   local body
   if op == "endpoint" then
      local arn = string.format("arn:aws:kinesisvideo:%s:%s:channel/%s/%d", REGION, ACCOUNT, name, base_ms + i)
      body = '{"ChannelARN": "' .. arn .. '", "SingleMasterChannelEndpointConfiguration": '
         .. '{"Protocols": ["WSS", "HTTPS"], "Role": "MASTER"}}'
   else
      body = '{"ChannelName": "' .. name .. '"}'
   end
   return wrk.format("POST", path, nil, body)
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
