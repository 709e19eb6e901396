-- Checks every limit of one rate_limit policy and consumes from all of them only when all
-- admit: a rejected request records nothing. Mirrors policies/ratelimit/algorithms.py step by
-- step (the memory store runs that twin); times are integer microseconds from this server's
-- clock, never a gateway's, so gateways on machines that drift still agree.
--
-- KEYS[i]  the i-th limit's state; every key shares one {hash tag} (one Cluster slot)
-- ARGV     four numbers per limit: kind, a, b, c
--          1 sliding window, exact:       a = limit, b = window
--          2 sliding window, approximate: a = limit, b = window
--          3 token bucket (GCRA):         a = microseconds per token, b = burst, c = cost
-- Returns  {admitted (1|0), retry_after s, remaining_1, reset_1 s, remaining_2, reset_2 s, ...}

local SLIDING, APPROXIMATE = 1, 2
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local function seconds_up(micros)
  return math.ceil(micros / 1000000)
end

-- sliding window, exact: a sorted set of admission times (score = member's time) -----------

local function log_load(key, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  return redis.call('ZCARD', key)
end

-- Score of the (index+1)-th oldest admission.
local function log_at(key, index)
  return tonumber(redis.call('ZRANGE', key, index, index, 'WITHSCORES')[2])
end

local function log_wait(key, count, limit, window)
  local excess = count - limit
  if excess < 0 then
    return 0
  end
  return log_at(key, excess) + window - now
end

local function log_add(key, window)
  local member = string.format('%d', now)
  if redis.call('ZADD', key, 'NX', now, member) == 0 then
    -- Another admission in this microsecond: number the duplicates. Members at one score
    -- only ever leave all together, so their count is a fresh suffix.
    member = member .. '-' .. redis.call('ZCOUNT', key, now, now)
    redis.call('ZADD', key, now, member)
  end
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
end

local function log_status(key, count, limit, window)
  if count == 0 then
    return limit, 0
  end
  local index = math.max(0, count - limit)
  return math.max(0, limit - count), log_at(key, index) + window - now
end

-- sliding window, approximate: {i = fixed window number, c = its count, p = previous count} --

local function counters_at(key, window)
  local saved = redis.call('HMGET', key, 'i', 'c', 'p')
  local index = math.floor(now / window)
  local state = {index = index, elapsed = now - index * window, current = 0, previous = 0}
  local at = tonumber(saved[1])
  if at == index then
    state.current, state.previous = tonumber(saved[2]), tonumber(saved[3])
  elseif at == index - 1 then
    state.previous = tonumber(saved[2])
  end
  return state
end

local function estimate(state, window)
  return state.previous * (window - state.elapsed) / window + state.current
end

local function decay(state, window, target)
  if target < 0 or estimate(state, window) <= target then
    return 0
  end
  local left = window - state.elapsed
  if state.current <= target then
    return left - window * (target - state.current) / state.previous
  end
  return left + window - window * target / state.current
end

local function counters_status(state, limit, window)
  local remaining = math.max(0, math.floor(limit - estimate(state, window)))
  return remaining, decay(state, window, limit - remaining - 1)
end

-- token bucket as GCRA: the key holds the time the bucket is full again -------------------

local function bucket_debt(key)
  local full_at = tonumber(redis.call('GET', key))
  if full_at == nil or full_at <= now then
    return 0
  end
  return full_at - now
end

local function bucket_status(debt, interval, burst)
  local remaining = math.max(0, math.floor((burst * interval - debt) / interval))
  if debt <= 0 then
    return remaining, 0
  end
  local partial = debt % interval
  if partial == 0 then
    partial = interval
  end
  return remaining, partial
end

-- check every limit, then consume from all or none ------------------------------------------

local states, wait = {}, 0
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 4
  local kind, a, b, c = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]),
    tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  local state, limit_wait
  if kind == SLIDING then
    state = log_load(key, b)
    limit_wait = log_wait(key, state, a, b)
  elseif kind == APPROXIMATE then
    state = counters_at(key, b)
    limit_wait = decay(state, b, a - 1)
  else
    state = bucket_debt(key)
    limit_wait = math.max(0, state + c * a - b * a)
  end
  states[i] = state
  wait = math.max(wait, limit_wait)
end

local admitted = wait == 0
local out = {0, math.max(1, seconds_up(wait))}
if admitted then
  out = {1, 0}
end
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 4
  local kind, a, b, c = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]),
    tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  local state, remaining, reset = states[i], 0, 0
  if kind == SLIDING then
    if admitted then
      log_add(key, b)
      state = state + 1
    end
    remaining, reset = log_status(key, state, a, b)
  elseif kind == APPROXIMATE then
    if admitted then
      state.current = state.current + 1
      redis.call('HSET', key, 'i', state.index, 'c', state.current, 'p', state.previous)
      redis.call('PEXPIRE', key, math.ceil(((state.index + 2) * b - now) / 1000))
    end
    remaining, reset = counters_status(state, a, b)
  else
    if admitted then
      state = state + c * a
      redis.call('SET', key, string.format('%d', now + state), 'PX', math.ceil(state / 1000))
    end
    remaining, reset = bucket_status(state, a, b)
  end
  out[#out + 1] = remaining
  out[#out + 1] = seconds_up(reset)
end
return out
