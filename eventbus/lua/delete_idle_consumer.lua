#!lua
-- delete_idle_consumer.lua: remove a consumer name only if it holds nothing and is idle.
-- KEYS[1]  stream    (stream)  the stream of the group
-- ARGV[1]  group
-- ARGV[2]  consumer  the name to remove
-- ARGV[3]  min_idle  (ms) it must have been idle at least this long
-- Returns 1 when removed; 0 when it has pending entries, is not idle enough or is gone.
-- The check and XGROUP DELCONSUMER run as one step, so a consumer that just received an
-- entry is never removed (DELCONSUMER would drop its pending entries).

for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name == ARGV[2] then
    if pending == 0 and idle >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
