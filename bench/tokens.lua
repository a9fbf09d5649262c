-- wrk script for bench/run.sh: a different bearer token on every request.
--
--   wrk -t1 -c32 -d10s -s bench/tokens.lua http://127.0.0.1:PORT -- TOKEN_FILE PATH [COUNT] [AFTER_PATH] [SKIP]
--
-- Walks TOKEN_FILE (one JWT a line), one token per request, from line SKIP+1 (default 1).
-- COUNT (0 = all) limits how many lines are used. When the tokens run out it starts over (those repeats are
-- cache hits for the gateway; run.sh reports the hit ratio from the gateway's metrics), unless
-- AFTER_PATH is given: then every later request goes to AFTER_PATH without a token, which lets
-- the memory measurement send each token exactly once and keep wrk busy on an anonymous route.
-- Requests are built as raw strings (cheaper for wrk than wrk.format on every request).

local tokens = {}
local n = 0
local i = 0
local prefix, suffix, after

function init(args)
  local file, path = args[1], args[2]
  local limit = tonumber(args[3] or "0") or 0
  local skip = tonumber(args[5] or "0") or 0
  local host = wrk.headers["Host"] or (wrk.host .. ":" .. tostring(wrk.port))
  local seen = 0
  for line in io.lines(file) do
    if #line > 0 then
      seen = seen + 1
      if seen > skip then
        n = n + 1
        tokens[n] = line
        if limit > 0 and n >= limit then break end
      end
    end
  end
  if n == 0 then error("no token in " .. file) end
  prefix = "GET " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nAuthorization: Bearer "
  suffix = "\r\n\r\n"
  if args[4] and #args[4] > 0 then
    after = "GET " .. args[4] .. " HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"
  end
end

local probed = false

function request()
  -- wrk calls request() once before the run to check for pipelining and throws the result
  -- away: answer that call without using up a token (at worst one token is sent twice).
  if not probed then
    probed = true
    return prefix .. tokens[1] .. suffix
  end
  i = i + 1
  if i > n then
    if after then return after end
    i = 1
  end
  return prefix .. tokens[i] .. suffix
end
