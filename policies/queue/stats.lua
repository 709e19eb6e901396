-- What `GET /-/queue` shows of one route.
-- KEYS: stream, due, dead, counts. ARGV: group, dead letters to list.
-- Returns {now ms, stream length, pending, parked, dead, oldest id ('' if none),
--          {delivered, failed}, {{dead id, key, attempts, status, error, method, target}, ...}}.
local stream, due, dead, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local pending = 0
local summary = redis.pcall('XPENDING', stream, ARGV[1])
if type(summary) == 'table' and summary.err == nil then pending = summary[1] end

local function ms(id)
  return tonumber(string.match(id, '^(%d+)'))
end
local oldest = ''
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #first == 1 then
  oldest = first[1][1]
  local f = first[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'k' then oldest = f[i + 1] end
  end
end
for _, key in ipairs(redis.call('ZRANGE', due, 0, 99)) do
  if oldest == '' or ms(key) < ms(oldest) then oldest = key end
end

local recent = {}
for _, entry in ipairs(redis.call('XREVRANGE', dead, '+', '-', 'COUNT', tonumber(ARGV[2]))) do
  local f = {}
  local pairs_ = entry[2]
  for j = 1, #pairs_, 2 do f[pairs_[j]] = pairs_[j + 1] end
  recent[#recent + 1] = {entry[1], f.k, f.n, f.s, f.e, f.m, f.p}
end
local tally = redis.call('HMGET', counts, 'delivered', 'failed')
return {now, redis.call('XLEN', stream), pending, redis.call('ZCARD', due),
  redis.call('XLEN', dead), oldest, {tonumber(tally[1]) or 0, tonumber(tally[2]) or 0}, recent}
