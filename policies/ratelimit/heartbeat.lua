-- Registers one gateway process and counts those seen lately (the default `local_share`).
-- Times are integer microseconds from this server's clock, so gateways whose clocks drift
-- still agree on who is alive. Mirrored by `beat_local` (heartbeat.py) for `memory://`.
--
-- KEYS[1]  the sorted set of processes (member: a process's id, score: its last beat)
-- ARGV     the process's id, then the age in microseconds past which a process is gone
-- Returns  how many processes beat within that age, this one included

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local age = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - age)
-- The set goes away with the last process: nothing is left behind when nobody beats.
redis.call('PEXPIRE', KEYS[1], math.ceil(age / 1000))
return redis.call('ZCARD', KEYS[1])
