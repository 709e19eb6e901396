-- Move dead letters back into the stream (attempts start again), one page per call.
-- KEYS: stream, dead. ARGV: key to replay ('' for every one), first dead id of the page, page size.
-- Returns {moved, next dead id to look at ('' at the end)}.
local stream, dead = KEYS[1], KEYS[2]
local size = tonumber(ARGV[3])
local page = redis.call('XRANGE', dead, ARGV[2], '+', 'COUNT', size + 1)
local moved = 0
for i = 1, math.min(#page, size) do
  local entry = page[i]
  local f = {}
  local pairs_ = entry[2]
  for j = 1, #pairs_, 2 do f[pairs_[j]] = pairs_[j + 1] end
  if ARGV[1] == '' or f.k == ARGV[1] then
    redis.call('XADD', stream, '*', 'm', f.m, 'p', f.p, 'h', f.h, 'b', f.b, 'k', f.k, 'n', 0,
      's', f.s, 'e', f.e)
    redis.call('XDEL', dead, entry[1])
    moved = moved + 1
  end
end
local next_id = ''
if #page > size then next_id = page[size + 1][1] end
return {moved, next_id}
