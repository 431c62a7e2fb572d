-- wrk script for scripts/bench-http: POSTs a body that no earlier request
-- sent (this run's nonce, the wrk thread, a counter), so a server's invoke
-- cache can never answer; every request runs a fresh instance.
local threads = 0
function setup(thread)
    thread:set("tid", threads)
    threads = threads + 1
end

function init(args)
    n = 0
    nonce = tostring(os.time()) .. "-" .. tostring(os.clock())
end

function request()
    n = n + 1
    return wrk.format("POST", nil, { ["Content-Type"] = "text/plain" },
        "hello stagecraft " .. nonce .. " " .. tid .. " " .. n)
end
