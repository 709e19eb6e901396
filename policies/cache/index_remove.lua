-- Forget purged URIs.
-- KEYS: index, expiry
-- ARGV: members
redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('ZREM', KEYS[2], unpack(ARGV))
return #ARGV
