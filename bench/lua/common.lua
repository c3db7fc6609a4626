-- Shared by requests.lua and writes.lua (loaded with dofile): numbers the threads, counts the status of every
-- response, and prints the totals when wrk is done, as lines the harness reads from wrk's output:
--   bench-status <code> <responses>
--   bench-step <step> <ok> <errors>      (writes.lua only: one line per kind of request)
--   bench-sent <kind> <requests>         (mixed.lua only: write requests sent, per kind)

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

-- Per thread, read by done() through thread:get(), which copies flat tables only (nested ones crash wrk 4.1).
statuses = {} -- status code -> responses

function count_status(status)
  statuses[status] = (statuses[status] or 0) + 1
end

local function add(totals, key, n)
  totals[key] = (totals[key] or 0) + n
end

function done(summary, latency, requests)
  local by_status, ok, errors, sent = {}, {}, {}, {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      add(by_status, status, n)
    end
    for step, n in pairs(thread:get("steps_ok") or {}) do
      add(ok, step, n)
    end
    for step, n in pairs(thread:get("steps_failed") or {}) do
      add(errors, step, n)
    end
    for kind, n in pairs(thread:get("sent_writes") or {}) do
      add(sent, kind, n)
    end
  end
  for status, n in pairs(by_status) do
    io.write(string.format("bench-status %d %d\n", status, n))
  end
  for step, n in pairs(ok) do
    io.write(string.format("bench-step %s %d %d\n", step, n, errors[step] or 0))
  end
  for kind, n in pairs(sent) do
    io.write(string.format("bench-sent %s %d\n", kind, n))
  end
end

-- The GET requests of a data file the harness writes, built once: "<path>" per line for an anonymous request, or
-- "<path>\t<token>" to send "Authorization: Token <token>" (requests.lua and mixed.lua).
function read_requests(file)
  local built = {}
  for line in io.lines(file) do
    local path, token = line:match("^([^\t]+)\t?(.*)$")
    local headers = {}
    if token ~= "" then
      headers["Authorization"] = "Token " .. token
    end
    built[#built + 1] = wrk.format("GET", path, headers)
  end
  return built
end
