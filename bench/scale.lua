-- wrk script of bench/scale.sh: as alternate.lua (every other request
-- carries X-Forensic-Case), and with a client count after "--", request n
-- carries "X-Client: c<n % clients>" (sticky_key=$http_x_client and
-- hash $http_x_client consistent).  done() prints one RESULT line.

local clients = 0
local n = 0

function init(args)
    clients = tonumber(args[1] or "0") or 0
end

function request()
    n = n + 1
    local h = {}
    if n % 2 == 0 then
        h["X-Forensic-Case"] = "INC-4211"
    end
    if clients > 0 then
        h["X-Client"] = "c" .. (n % clients)
    end
    return wrk.format("GET", "/", h)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d sockerr=%d non2xx=%d "
        .. "p50_us=%d p99_us=%d\n",
        summary.requests, summary.duration,
        e.connect + e.read + e.write + e.timeout, e.status,
        latency:percentile(50), latency:percentile(99)))
end
