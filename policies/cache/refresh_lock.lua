-- Take the lock to revalidate or refresh a stored variant, unless it already changed: a
-- gateway that saw the old copy must not refresh again what another one just refreshed.
-- KEYS: entry hash, lock
-- ARGV: variant id, store time (ms) of the copy seen, lock token, lock ttl (ms)
-- Returns {state, lock_pttl}: C (changed or gone), L (lock taken), W (someone holds it).
local meta = redis.call('HGET', KEYS[1], 'm:' .. ARGV[1])
if not meta or string.match(meta, '^(%d+) ') ~= ARGV[2] then
  return {'C', 0}
end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {'L', 0}
end
return {'W', redis.call('PTTL', KEYS[2])}
