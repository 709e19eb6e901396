-- The busiest members of a route's leaderboard (see rate_limit.lua, which counts them) over
-- the buckets that overlap the last `window` seconds of this server's clock.
--
-- KEYS     leaderboard prefixes (shards) of one route, all on this server: buckets are
--          `<prefix>:<n>`, their rejections `<prefix>:<n>:r`
-- ARGV     bucket seconds, window seconds, n
-- Returns  {member, requests, rejected, ...} for the n busiest members, busiest first

local span, window, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(redis.call('TIME')[1])
local first, last = math.floor((now - window) / span), math.floor(now / span)

-- Unions are made in a scratch key beside the first prefix (same slot), a few hundred keys
-- at a time (Lua's unpack has a limit), and dropped before the script ends.
local union = KEYS[1] .. ':union'
local function union_of(suffix)
  redis.call('DEL', union)
  local batch = {}
  local function flush()
    if #batch > 0 then
      redis.call('ZUNIONSTORE', union, #batch + 1, union, unpack(batch))
      batch = {}
    end
  end
  for _, prefix in ipairs(KEYS) do
    for bucket = first, last do
      batch[#batch + 1] = prefix .. ':' .. string.format('%d', bucket) .. suffix
      if #batch == 500 then
        flush()
      end
    end
  end
  flush()
end

union_of('')
local top = redis.call('ZREVRANGE', union, 0, n - 1, 'WITHSCORES')
local out = {}
if #top > 0 then
  union_of(':r')
  for i = 1, #top, 2 do
    out[#out + 1] = top[i]
    out[#out + 1] = tonumber(top[i + 1])
    out[#out + 1] = tonumber(redis.call('ZSCORE', union, top[i]) or '0')
  end
end
redis.call('DEL', union)
return out
