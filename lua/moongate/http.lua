-- moongate.http: the non-blocking HTTP client for hooks and timers, also
-- reachable as gw.http. See moongate.runtime.http_request.
local runtime = require "moongate.runtime"

return { request = runtime.http_request }
