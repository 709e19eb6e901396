-- Adds ARGV[1] to each of KEYS (which share one hash tag, so one Cluster slot holds them all)
-- and returns the new counts, with the server's time in seconds to show the script ran there.
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCRBY', key, ARGV[1])
end
counts[#counts + 1] = tonumber(redis.call('TIME')[1])
return counts
