-- Members of the purge index between two lexicographic bounds ("[x" inclusive, "(x" not).
-- KEYS: index
-- ARGV: min, max, limit
return redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
