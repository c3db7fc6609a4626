-- GET requests read from a data file the harness writes, one per line: "<path>" for an anonymous request, or
-- "<path>\t<token>" to send "Authorization: Token <token>". Each thread cycles through the lines, starting at a
-- random line of its own.
--   wrk -t2 -c64 -d10s --latency -s bench/lua/requests.lua http://127.0.0.1:8000 -- /tmp/list.txt

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua") -- the file beside this one

local requests = {}
local next_request = 1

function init(args)
  requests = read_requests(args[1])
  math.randomseed(thread_id)
  next_request = math.random(#requests)
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

function response(status, headers, body)
  count_status(status)
end
