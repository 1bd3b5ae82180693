-- wrk script: POST 1 KiB CloudEvents in binary mode to a broker's ingress.
-- wrk -t2 -c64 -d20s --latency -s bench/ingest.lua http://127.0.0.1:8080/default/default
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["ce-specversion"] = "1.0"
wrk.headers["ce-source"] = "/bench"
wrk.headers["ce-type"] = "com.example.bench"
wrk.headers["content-type"] = "application/octet-stream"
local counter = 0
request = function()
  counter = counter + 1
  wrk.headers["ce-id"] = tostring(counter)
  return wrk.format()
end
done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("non-2xx: %d, socket errors: %d\n", non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
