-- The soak's mixed load (make soak): the reads of requests.lua, and every <write_every>-th request of a thread a
-- write by one of the writers (tokens the harness registered): create an article, comment on the article this
-- thread created last, favorite it, and again. No register or login: Argon2 would dominate, and a site's users
-- sign in far less often than they read.
--   wrk -t2 -c64 -d60s --latency -s bench/lua/mixed.lua http://127.0.0.1:8000 -- \
--     <reads file> <writers file> <write_every> <tag,tag,...> <title prefix>
-- The reads file is requests.lua's ("<path>" or "<path>\t<token>" per line), the writers file one token per line.

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua") -- the file beside this one

local WRITES = { "article", "comment", "favorite" }
local BODY = string.rep("Lorem ipsum dolor sit amet. ", 20)

local reads, writers, tags = {}, {}, {}
local next_read, next_writer = 1, 1
local write_every, title_prefix = 50, "soak"
local sent, writes = 0, 0
local slug -- the article this thread created last (a thread's connections share it)

sent_writes = {} -- kind -> write requests sent, read by done() in common.lua

function init(args)
  reads = read_requests(args[1])
  for token in io.lines(args[2]) do
    writers[#writers + 1] = token
  end
  write_every = tonumber(args[3])
  for tag in string.gmatch(args[4] or "", "[^,]+") do
    tags[#tags + 1] = tag
  end
  title_prefix = args[5]
  for _, kind in ipairs(WRITES) do
    sent_writes[kind] = 0
  end
  math.randomseed(thread_id)
  next_read = math.random(#reads)
  next_writer = thread_id % #writers + 1
end

local function post(path, body)
  local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Token " .. writers[next_writer] }
  next_writer = next_writer % #writers + 1
  return wrk.format("POST", path, headers, body)
end

local function write()
  writes = writes + 1
  local kind = WRITES[(writes - 1) % #WRITES + 1]
  if slug == nil then
    kind = "article" -- nothing of ours to comment on yet (its creation may still be in flight)
  end
  sent_writes[kind] = sent_writes[kind] + 1
  if kind == "article" then
    local picked = {}
    for i = 0, 1 + writes % 2 do -- 2 or 3 tags
      picked[#picked + 1] = '"' .. tags[(writes + i * 7) % #tags + 1] .. '"'
    end
    return post("/api/articles", string.format(
      '{"article":{"title":"%s t%d n%d","description":"A soak article","body":"%s","tagList":[%s]}}',
      title_prefix, thread_id, writes, BODY, table.concat(picked, ",")))
  elseif kind == "comment" then
    return post("/api/articles/" .. slug .. "/comments", '{"comment":{"body":"Thank you, that helped."}}')
  end
  return post("/api/articles/" .. slug .. "/favorite", nil)
end

function request()
  sent = sent + 1
  if sent % write_every == 0 then
    return write()
  end
  local r = reads[next_read]
  next_read = next_read % #reads + 1
  return r
end

function response(status, headers, body)
  count_status(status)
  -- Only creating an article answers 201 with an article (a comment's 201 holds a comment): remember its slug.
  if status == 201 and body:sub(1, 11) == '{"article":' then
    slug = body:match('"slug"%s*:%s*"([^"]+)"') or slug
  end
end
