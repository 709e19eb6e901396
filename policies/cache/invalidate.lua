-- Drop every variant of a URI and leave a tombstone, so that a fill already in flight
-- (its answer may predate the change) does not store it afterwards.
-- KEYS: entry hash, tombstone
-- ARGV: tombstone ttl (ms)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])  -- microseconds, as lookup's
local dropped = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], string.format('%d', now), 'PX', ARGV[1])
return dropped
