-- A consumer that stops forgets itself when it holds nothing (what it holds stays pending
-- and is reclaimed after the visibility timeout), and so do consumers idle for an hour.
-- KEYS: stream. ARGV: group, consumer.
local stream, group = KEYS[1], ARGV[1]
local consumers = redis.pcall('XINFO', 'CONSUMERS', stream, group)
if type(consumers) ~= 'table' or consumers.err then return 0 end
local gone = 0
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info.pending == 0 and (info.name == ARGV[2] or info.idle > 3600000) then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, info.name)
    gone = gone + 1
  end
end
return gone
