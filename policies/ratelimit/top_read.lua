-- The busiest members of one shard of a route's leaderboard (see rate_limit.lua, which counts
-- them) over the buckets that overlap the last `window` seconds of this server's clock.
--
-- KEYS[1]  the leaderboard's prefix: buckets are `<prefix>:<n>`, their rejections `<prefix>:<n>:r`
-- ARGV     bucket seconds, window seconds, n
-- Returns  {member, requests, rejected, ...} for the n busiest members, busiest first

local span, window, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(redis.call('TIME')[1])
local requests, rejections = {}, {}
for bucket = math.floor((now - window) / span), math.floor(now / span) do
  local key = KEYS[1] .. ':' .. string.format('%d', bucket)
  requests[#requests + 1] = key
  rejections[#rejections + 1] = key .. ':r'
end

-- Unions are made in a scratch key of the same slot and dropped before the script ends.
local union = KEYS[1] .. ':union'
redis.call('ZUNIONSTORE', union, #requests, unpack(requests))
local top = redis.call('ZREVRANGE', union, 0, n - 1, 'WITHSCORES')
local out = {}
if #top > 0 then
  redis.call('ZUNIONSTORE', union, #rejections, unpack(rejections))
  for i = 1, #top, 2 do
    out[#out + 1] = top[i]
    out[#out + 1] = tonumber(top[i + 1])
    out[#out + 1] = tonumber(redis.call('ZSCORE', union, top[i]) or '0')
  end
end
redis.call('DEL', union)
return out
