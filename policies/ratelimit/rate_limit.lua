-- Decides `n` requests of one identity, in order, as if each had its own call: a request is
-- admitted only if every limit admits it, and then counts against every limit; a rejected
-- request records nothing. Mirrors policies/ratelimit/algorithms.py step by step (the memory
-- store runs that twin, scripts.py). Times are integer microseconds from this server's clock,
-- never a gateway's, so gateways on machines that drift still agree.
--
-- KEYS[i]  the i-th limit's state; every key shares one {hash tag} (one Cluster slot)
--          then, optionally, the route's leaderboard (the top consumers) in that slot
-- ARGV     n, then four numbers per limit: kind, a, b, c
--          1 sliding window, exact:       a = limit, b = window
--          2 sliding window, approximate: a = limit, b = window
--          3 token bucket (GCRA):         a = microseconds per token, b = burst, c = cost
--          then with a leaderboard: bucket seconds, seconds a bucket is kept, the member
-- Returns  {admitted k, retry_after s (0 when k = n),
--           for each admitted request: remaining_1, reset_1 s, remaining_2, reset_2 s, ...,
--           when k < n, once for the rejected rest: remaining_1, reset_1 s, ...}
-- Rejections do not change the state and the clock is read once, so every request after the
-- first rejected one gets the same answer.

local SLIDING, APPROXIMATE = 1, 2
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local function seconds_up(micros)
  return math.ceil(micros / 1000000)
end

-- sliding window, exact: a sorted set of admission times (score = the member's time). -------
-- This call's admissions are written once, at the end; until then they are the entries
-- `s.before` to `s.count` (0-based), all at `now`, after those that were there.

local function log_load(s)
  redis.call('ZREMRANGEBYSCORE', s.key, '-inf', now - s.b)
  s.before = redis.call('ZCARD', s.key)
  s.count = s.before
end

-- Time of the (index+1)-th oldest admission.
local function log_at(s, index)
  if index >= s.before then
    return now
  end
  if index == 0 then
    s.oldest = s.oldest or tonumber(redis.call('ZRANGE', s.key, 0, 0, 'WITHSCORES')[2])
    return s.oldest
  end
  return tonumber(redis.call('ZRANGE', s.key, index, index, 'WITHSCORES')[2])
end

local function log_wait(s)
  local excess = s.count - s.a
  if excess < 0 then
    return 0
  end
  -- The (excess+1)-th oldest admission must leave before a place is free.
  return log_at(s, excess) + s.b - now
end

local function log_status(s)
  if s.count == 0 then
    return s.a, 0
  end
  local index = math.max(0, s.count - s.a)
  return math.max(0, s.a - s.count), log_at(s, index) + s.b - now
end

local function log_save(s)
  local added = s.count - s.before
  local stamp = string.format('%d', now)
  -- Members must be unique even within one microsecond: number them after those already
  -- at this time (admissions at one time only ever leave together, so the count is fresh).
  local first = redis.call('ZCOUNT', s.key, now, now)
  local args = {}
  for i = 0, added - 1 do
    local suffix = first + i
    args[#args + 1] = now
    args[#args + 1] = suffix == 0 and stamp or (stamp .. '-' .. suffix)
  end
  redis.call('ZADD', s.key, unpack(args))
  redis.call('PEXPIRE', s.key, math.ceil(s.b / 1000))
end

-- sliding window, approximate: {i = fixed window number, c = its count, p = previous count} --

local function counters_load(s)
  local saved = redis.call('HMGET', s.key, 'i', 'c', 'p')
  s.number = math.floor(now / s.b)
  s.elapsed = now - s.number * s.b
  s.current, s.previous = 0, 0
  local at = tonumber(saved[1])
  if at == s.number then
    s.current, s.previous = tonumber(saved[2]), tonumber(saved[3])
  elseif at == s.number - 1 then
    s.previous = tonumber(saved[2])
  end
end

local function estimate(s)
  return s.previous * (s.b - s.elapsed) / s.b + s.current
end

-- Microseconds until the estimate falls to `target` with no further admissions.
local function decay(s, target)
  if target < 0 or estimate(s) <= target then
    return 0
  end
  local left = s.b - s.elapsed
  if s.current <= target then
    return left - s.b * (target - s.current) / s.previous
  end
  return left + s.b - s.b * target / s.current
end

local function counters_status(s)
  local remaining = math.max(0, math.floor(s.a - estimate(s)))
  return remaining, decay(s, s.a - remaining - 1)
end

local function counters_save(s)
  redis.call('HSET', s.key, 'i', s.number, 'c', s.current, 'p', s.previous)
  redis.call('PEXPIRE', s.key, math.ceil(((s.number + 2) * s.b - now) / 1000))
end

-- token bucket as GCRA: the key holds the time at which the bucket is full again ----------

local function bucket_load(s)
  local full_at = tonumber(redis.call('GET', s.key))
  s.debt = 0
  if full_at ~= nil and full_at > now then
    s.debt = full_at - now
  end
end

local function bucket_status(s)
  local remaining = math.max(0, math.floor((s.b * s.a - s.debt) / s.a))
  if s.debt <= 0 then
    return remaining, 0
  end
  local partial = s.debt % s.a
  if partial == 0 then
    partial = s.a
  end
  return remaining, partial
end

local function bucket_save(s)
  redis.call('SET', s.key, string.format('%d', now + s.debt), 'PX', math.ceil(s.debt / 1000))
end

-- decide ------------------------------------------------------------------------------------

-- With a leaderboard there is one more key than limits, and three more arguments.
local limits, board = #KEYS, nil
if #ARGV - 1 < 4 * #KEYS then
  limits, board = #KEYS - 1, KEYS[#KEYS]
end

local states = {}
for i = 1, limits do
  local key = KEYS[i]
  local base = (i - 1) * 4 + 1
  local s = {
    key = key,
    kind = tonumber(ARGV[base + 1]),
    a = tonumber(ARGV[base + 2]),
    b = tonumber(ARGV[base + 3]),
    c = tonumber(ARGV[base + 4]),
  }
  if s.kind == SLIDING then
    log_load(s)
  elseif s.kind == APPROXIMATE then
    counters_load(s)
  else
    bucket_load(s)
  end
  states[i] = s
end

local function wait_of(s)
  if s.kind == SLIDING then
    return log_wait(s)
  elseif s.kind == APPROXIMATE then
    return decay(s, s.a - 1)
  end
  return math.max(0, s.debt + s.c * s.a - s.b * s.a)
end

local function add(s)
  if s.kind == SLIDING then
    s.count = s.count + 1
  elseif s.kind == APPROXIMATE then
    s.current = s.current + 1
  else
    s.debt = s.debt + s.c * s.a
  end
end

local function status(s)
  if s.kind == SLIDING then
    return log_status(s)
  elseif s.kind == APPROXIMATE then
    return counters_status(s)
  end
  return bucket_status(s)
end

local out = {0, 0}
local function append_statuses()
  for _, s in ipairs(states) do
    local remaining, reset = status(s)
    out[#out + 1] = remaining
    out[#out + 1] = seconds_up(reset)
  end
end

local requests, admitted, wait = tonumber(ARGV[1]), 0, 0
while admitted < requests do
  for _, s in ipairs(states) do
    wait = math.max(wait, wait_of(s))
  end
  if wait > 0 then
    break
  end
  for _, s in ipairs(states) do
    add(s)
  end
  admitted = admitted + 1
  append_statuses()
end
out[1] = admitted
if admitted < requests then
  out[2] = math.max(1, seconds_up(wait))
  append_statuses()
end
if admitted > 0 then
  for _, s in ipairs(states) do
    if s.kind == SLIDING then
      log_save(s)
    elseif s.kind == APPROXIMATE then
      counters_save(s)
    else
      bucket_save(s)
    end
  end
end

-- The leaderboard: per time bucket, a sorted set of requests by member and one of rejections
-- (`:r`); a bucket expires `keep` seconds after it ends. PEXPIREAT only when the member is new
-- to the bucket (its score is this call's count): that covers a new bucket, and it is absolute.
local function tally(key, count, member, expire_at)
  if tonumber(redis.call('ZINCRBY', key, count, member)) == count then
    redis.call('PEXPIREAT', key, expire_at)
  end
end

if board then
  local base = 2 + limits * 4
  local span, keep, member = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), ARGV[base + 2]
  local bucket = math.floor(now / (span * 1000000))
  local key = board .. ':' .. string.format('%d', bucket)
  local expire_at = string.format('%d', ((bucket + 1) * span + keep) * 1000)
  tally(key, requests, member, expire_at)
  if admitted < requests then
    tally(key .. ':r', requests - admitted, member, expire_at)
  end
end
return out
