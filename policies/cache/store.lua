-- Store one variant; release the filler's lock; clear the pass marker.
-- KEYS: entry hash, the filler's lock, pass marker, invalidation tombstone
-- ARGV: vary names, variant id, encoded entry, retention (ms), lock token ("" for none),
--       max variants, fill start (store clock, microseconds, from the lookup)
-- Returns the store time (ms), or 0 when an invalidation since the fill started forbids it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
end
-- The answer may predate a write that invalidated this URI while it was in flight.
local tomb = redis.call('GET', KEYS[4])  -- microseconds
if tomb and tonumber(tomb) >= tonumber(ARGV[7]) then
  return 0
end
local current = redis.call('HGET', KEYS[1], 'vary')
if current and current ~= ARGV[1] then
  -- The origin changed its Vary: variants keyed by the old names are unreachable.
  redis.call('DEL', KEYS[1])
end
local vid = ARGV[2]
local deadline = now + tonumber(ARGV[4])
local variants = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, 2) == 'm:' and string.sub(field, 3) ~= vid then
    local other = string.sub(field, 3)
    local stored, expires = string.match(redis.call('HGET', KEYS[1], field) or '', '^(%d+) (%d+)$')
    if not stored or tonumber(expires) <= now then
      redis.call('HDEL', KEYS[1], 'e:' .. other, field)
    else
      table.insert(variants, {other, tonumber(stored), tonumber(expires)})
    end
  end
end
table.sort(variants, function(a, b) return a[2] < b[2] end)
while #variants >= tonumber(ARGV[6]) do
  local oldest = table.remove(variants, 1)
  redis.call('HDEL', KEYS[1], 'e:' .. oldest[1], 'm:' .. oldest[1])
end
local latest = deadline
for _, v in ipairs(variants) do
  if v[3] > latest then
    latest = v[3]
  end
end
redis.call('HSET', KEYS[1], 'vary', ARGV[1], 'e:' .. vid, ARGV[3],
  'm:' .. vid, string.format('%d %d', now, deadline))
redis.call('PEXPIRE', KEYS[1], math.max(1, latest - now))
redis.call('DEL', KEYS[3])
return now
