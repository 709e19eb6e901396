-- Append one request to a route's stream; entries older than the retention go (approximately).
-- KEYS[1] stream. ARGV[1] retention ms, then the entry's fields and values.
-- Returns the entry's id (also its Idempotency-Key).
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local args = {'XADD', KEYS[1], 'MINID', '~', now - tonumber(ARGV[1]), '*'}
for i = 2, #ARGV do
  args[#args + 1] = ARGV[i]
end
return redis.call(unpack(args))
