-- wrk script used for every case, so the client does the same work in all
-- of them: every other request carries X-Forensic-Case (it only matters in
-- case (e), whose pin_selector matches it).  done() prints one RESULT line.

local reqs
local n = 0

function init(args)
    reqs = {
        wrk.format("GET", "/", { ["X-Forensic-Case"] = "INC-4211" }),
        wrk.format("GET", "/"),
    }
end

function request()
    n = n + 1
    return reqs[n % 2 + 1]
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d sockerr=%d non2xx=%d "
        .. "p50_us=%d p90_us=%d p99_us=%d mean_us=%.1f\n",
        summary.requests, summary.duration,
        e.connect + e.read + e.write + e.timeout, e.status,
        latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.mean))
end
