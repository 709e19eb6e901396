-- Work for one consumer: retries that fell due go back into the stream, then entries held
-- too long by another consumer (XAUTOCLAIM), then new ones (XREADGROUP), `count` at most.
-- KEYS: stream, due (zset key -> ms), parked (hash "<key>:<field>").
-- ARGV: group, consumer, count, visibility ms, XAUTOCLAIM cursor.
-- Returns {next cursor, {{id, attempts lost, {field, value, ...}}, ...}}.
local stream, due, parked = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
-- From 0, so that entries added before the group existed are read too.
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')

local names = {'m', 'p', 'h', 'b', 'n', 's', 'e'}
for _, key in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, count)) do
  local fields = {}
  for i, name in ipairs(names) do fields[i] = key .. ':' .. name end
  local f = redis.call('HMGET', parked, unpack(fields))
  if f[1] then
    redis.call('XADD', stream, '*', 'm', f[1], 'p', f[2], 'h', f[3], 'b', f[4], 'k', key,
      'n', f[5], 's', f[6], 'e', f[7])
  end
  redis.call('ZREM', due, key)
  redis.call('HDEL', parked, unpack(fields))
end

local out = {}
local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], ARGV[5], 'COUNT', count)
for _, entry in ipairs(claimed[2]) do
  -- Each earlier delivery of this entry ended without a verdict: an attempt lost.
  local pending = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
  out[#out + 1] = {entry[1], pending[1][4] - 1, entry[2]}
end
if #out < count then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out,
    'STREAMS', stream, '>')
  if read then
    for _, entry in ipairs(read[1][2]) do
      out[#out + 1] = {entry[1], 0, entry[2]}
    end
  end
end
return {claimed[1], out}
