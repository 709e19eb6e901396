-- Release a lock, only by its owner (check-and-delete); optionally leave a pass marker so
-- that the next misses of a response that turned out not storable do not queue up.
-- KEYS: lock, pass marker
-- ARGV: lock token, pass marker ttl (ms, 0: none)
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
end
return released
