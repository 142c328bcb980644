-- wrk script: POST one JSON body (read from WRK_BODY_FILE) with a bearer token (WRK_AUTH) and
-- any extra headers (WRK_HEADERS: "name: value" lines, e.g. the ones Portkey's gateway needs);
-- prints one machine-readable "RESULT {json}" line at the end (same keys as loadgen.py).
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("WRK_AUTH") or "dummy")
for line in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^%s*([^:]+):%s*(.-)%s*$")
  if name then wrk.headers[name] = value end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"rps":%.3f,"p50_us":%d,"p90_us":%d,'
    .. '"p99_us":%d,"mean_us":%.1f,"max_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,'
    .. '"err_status":%d,"err_timeout":%d,"generator":"wrk"}\n',
    summary.requests, summary.duration, summary.bytes, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
