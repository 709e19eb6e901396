-- The verdict on one delivery: 'ack' (delivered), 'park' (retry after a delay) or 'dead'.
-- Nothing happens when the entry is no longer pending (another consumer settled it).
-- KEYS: stream, due, parked, dead, counts.
-- ARGV: group, id, verdict, key, attempts, last status, last error, delay ms, retention ms,
--       the counter to increment ('' for none).
local stream, due, parked, dead, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, id, verdict = ARGV[1], ARGV[2], ARGV[3]
if #redis.call('XPENDING', stream, group, id, id, 1) == 0 then
  return 0
end
if verdict ~= 'ack' then
  local found = redis.call('XRANGE', stream, id, id)
  if #found == 1 then
    local f = {}
    local pairs_ = found[1][2]
    for i = 1, #pairs_, 2 do f[pairs_[i]] = pairs_[i + 1] end
    local key, attempts, status, err = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
    local t = redis.call('TIME')
    local now = t[1] * 1000 + math.floor(t[2] / 1000)
    if verdict == 'park' then
      redis.call('HSET', parked, key .. ':m', f.m, key .. ':p', f.p, key .. ':h', f.h,
        key .. ':b', f.b, key .. ':n', attempts, key .. ':s', status, key .. ':e', err)
      redis.call('ZADD', due, now + tonumber(ARGV[8]), key)
    else
      redis.call('XADD', dead, 'MINID', '~', now - tonumber(ARGV[9]), '*', 'm', f.m, 'p', f.p,
        'h', f.h, 'b', f.b, 'k', key, 'n', attempts, 's', status, 'e', err)
    end
  end
end
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
if ARGV[10] ~= '' then
  redis.call('HINCRBY', counts, ARGV[10], 1)
end
return 1
