-- bench/lua/bench_optout.lua: case (f), the OpenResty-style alternative to
-- the module.  The same per-request logic as the module's pin and
-- failover=false: read the flag from a lua_shared_dict, pin (optionally
-- only requests whose X-Forensic-Case equals pin_selector), else round
-- robin over the servers; with a pin or failover=false, no retry
-- (set_more_tries(0)).  Flags are set in init_by_lua (an admin endpoint
-- writing the dict would be the same on the request path).

local balancer = require "ngx.balancer"

local dict = ngx.shared.ha_optout
local servers = {}
local rr = 0
local pin_text, pin_host, pin_port

local _M = {}

local function split(addr)
    local host, port = addr:match("^(.+):(%d+)$")
    return host, tonumber(port)
end

function _M.init(list)
    for i, addr in ipairs(list) do
        local host, port = split(addr)
        servers[i] = { host, port }
    end
end

function _M.balance()
    local pin = dict:get("app:pin")
    local failover = dict:get("app:failover")

    if pin then
        local sel = dict:get("app:pin_selector")
        if sel and ngx.var.http_x_forensic_case ~= sel then
            pin = nil
        end
    end

    local host, port
    if pin then
        if pin ~= pin_text then
            pin_host, pin_port = split(pin)
            pin_text = pin
        end
        host, port = pin_host, pin_port
    else
        rr = rr % #servers + 1
        host, port = servers[rr][1], servers[rr][2]
    end

    local ok, err = balancer.set_current_peer(host, port)
    if not ok then
        ngx.log(ngx.ERR, "set_current_peer: ", err)
        return ngx.exit(502)
    end

    if pin or failover == false then
        balancer.set_more_tries(0)
    end
end

return _M
