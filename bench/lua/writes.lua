-- The write mix: each simulated user registers, logs in, creates an article with 2-3 tags, comments on it and
-- favorites it, then starts over as a new user. Run it with as many connections as threads (-t N -c N): wrk gives
-- a script no per-connection state, so one thread is one user, and its requests strictly alternate with responses.
--   wrk -t8 -c8 -d10s --latency -s bench/lua/writes.lua http://127.0.0.1:8000 -- <username prefix> <tag,tag,...>
-- Usernames are "<prefix>_t<thread>_<n>": the harness makes the prefix unique per run, side, round and phase.
-- A step that fails (not 2xx) is counted and the user starts over.

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua") -- the file beside this one

local STEPS = { "register", "login", "article", "comment", "favorite" }
local PASSWORD = "password123"

local prefix = "bench"
local tags = {}
local step = 1
local users = 0
local username, token, slug

steps_ok, steps_failed = {}, {} -- step -> responses, read by done() in common.lua

function init(args)
  prefix = args[1]
  for tag in string.gmatch(args[2] or "", "[^,]+") do
    tags[#tags + 1] = tag
  end
  for _, name in ipairs(STEPS) do
    steps_ok[name], steps_failed[name] = 0, 0
  end
end

local function tag_list()
  local picked = {}
  for i = 0, 1 + users % 2 do -- 2 or 3 tags
    picked[#picked + 1] = '"' .. tags[(users + i * 7) % #tags + 1] .. '"'
  end
  return "[" .. table.concat(picked, ",") .. "]"
end

local function post(path, body)
  local headers = { ["Content-Type"] = "application/json" }
  if token then
    headers["Authorization"] = "Token " .. token
  end
  return wrk.format("POST", path, headers, body)
end

function request()
  local name = STEPS[step]
  if name == "register" then
    users = users + 1
    username = string.format("%s_t%d_%d", prefix, thread_id, users)
    token = nil
    return post("/api/users", string.format(
      '{"user":{"username":"%s","email":"%s@example.com","password":"%s"}}', username, username, PASSWORD))
  elseif name == "login" then
    return post("/api/users/login", string.format(
      '{"user":{"email":"%s@example.com","password":"%s"}}', username, PASSWORD))
  elseif name == "article" then
    return post("/api/articles", string.format(
      '{"article":{"title":"Notes by %s","description":"A benchmark article","body":"%s","tagList":%s}}',
      username, string.rep("Lorem ipsum dolor sit amet. ", 20), tag_list()))
  elseif name == "comment" then
    return post("/api/articles/" .. slug .. "/comments", '{"comment":{"body":"Thank you, that helped."}}')
  else
    return post("/api/articles/" .. slug .. "/favorite", nil)
  end
end

function response(status, headers, body)
  count_status(status)
  local name = STEPS[step]
  if status < 200 or status > 299 then
    steps_failed[name] = steps_failed[name] + 1
    step = 1
    return
  end
  steps_ok[name] = steps_ok[name] + 1
  if name == "register" or name == "login" then
    token = body:match('"token"%s*:%s*"([^"]+)"')
  elseif name == "article" then
    slug = body:match('"slug"%s*:%s*"([^"]+)"')
  end
  step = step % #STEPS + 1
end
