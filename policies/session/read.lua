-- Read a session hash and slide its expiry, in one round trip.
--
-- KEYS[1]  the session key, `<key_prefix><id>`, as the app wrote it
-- ARGV[1]  sliding ttl in milliseconds; 0: leave the expiry alone
-- ARGV[2]  refresh threshold in milliseconds (sliding_ttl - refresh_every): the expiry is
--          pushed back only once the time left fell below it, so a busy session costs one
--          write per refresh_every, not one per request
-- ARGV[3..] the fields to read; none: the whole hash
--
-- Returns nil when there is no such session, else the values of the named fields in order
-- (nil for an absent field), or the whole hash as {field, value, ...}.
-- Time is Redis's own: PTTL is relative to the server's clock, never the gateway's.

local key = KEYS[1]
local values
if #ARGV > 2 then
  if redis.call('EXISTS', key) == 0 then
    return nil
  end
  values = redis.call('HMGET', key, unpack(ARGV, 3))
else
  values = redis.call('HGETALL', key)
  if #values == 0 then
    return nil
  end
end

local sliding = tonumber(ARGV[1])
if sliding > 0 then
  local left = redis.call('PTTL', key)
  -- left is -1 for a session without expiry: the app chose that, keep it.
  if left >= 0 and left < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', key, sliding)
  end
end
return values
