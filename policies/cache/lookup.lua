-- One hit, one round trip: the URI's Vary names, the variant's entry and its store metadata.
-- On a miss, optionally take the fill lock (request collapsing) in the same call.
-- KEYS: entry hash, lock of the expected variant, lock of the URI, pass marker
-- ARGV: expected vary names, variant id, take lock ("1"/"0"), lock token, lock ttl (ms),
--       then optionally the request's headers as name, normalised value, ... (sent by a
--       caller that does not know the URI's Vary yet, so the variant is found here)
-- Returns {now_us, vary|nil, entry|nil, meta|nil, state, lock_pttl, variant|nil}; state is
-- H (entry found), M (Vary differs from the expected: retry), N (miss, no lock asked),
-- P (miss, recently not storable: go upstream alone), L (miss, lock taken), W (miss, locked).
-- Microseconds: an invalidation and a later lookup must never share a timestamp.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local vary = redis.call('HGET', KEYS[1], 'vary')
if vary and vary ~= ARGV[1] then
  local variant = false
  if vary == '' then
    variant = '-'
  elseif #ARGV > 5 then
    -- The same secondary key as variant_id() in freshness.py: SHA-1 of name=value lines.
    local values = {}
    for i = 6, #ARGV - 1, 2 do
      values[ARGV[i]] = ARGV[i + 1]
    end
    local lines = {}
    for name in string.gmatch(vary, '[^,]+') do
      local value = values[name]
      if value then
        table.insert(lines, name .. '=' .. value)
      else
        table.insert(lines, name .. '\0absent')
      end
    end
    variant = redis.sha1hex(table.concat(lines, '\n'))
  end
  if variant then
    local got = redis.call('HMGET', KEYS[1], 'e:' .. variant, 'm:' .. variant)
    if got[1] then
      return {now, vary, got[1], got[2], 'H', 0, variant}
    end
  end
  -- A miss of a variant whose lock key the caller could not name: it asks again.
  return {now, vary, false, false, 'M', 0, variant}
end
if vary then
  local got = redis.call('HMGET', KEYS[1], 'e:' .. ARGV[2], 'm:' .. ARGV[2])
  if got[1] then
    return {now, vary, got[1], got[2], 'H', 0, ARGV[2]}
  end
end
if ARGV[3] ~= '1' then
  return {now, vary, false, false, 'N', 0, false}
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {now, vary, false, false, 'P', 0, false}
end
-- Without a stored Vary nobody knows the variant yet: every filler shares the URI's lock.
local lock = KEYS[3]
if vary then
  lock = KEYS[2]
end
if redis.call('SET', lock, ARGV[4], 'NX', 'PX', ARGV[5]) then
  return {now, vary, false, false, 'L', 0, false}
end
return {now, vary, false, false, 'W', redis.call('PTTL', lock), false}
