#!lua
-- reclaim.lua: take over entries left pending too long (on any consumer), with counts.
-- KEYS[1]  stream    (stream)  main or retry stream of the group
-- ARGV[1]  group
-- ARGV[2]  consumer  who takes the entries
-- ARGV[3]  min_idle  (ms) only entries idle at least this long
-- ARGV[4]  start     id to start scanning from ("0-0" for the beginning)
-- ARGV[5]  count     (entries) most entries to claim
-- Returns {next_start, {{id, delivery_count}, ...}, {deleted_id, ...}}.
-- JUSTID: claiming does not count as a delivery; the consumer's next read of its own
-- pending entries does. Entries deleted from the stream are dropped from the pending list
-- by Redis and listed in the third element.

local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                       'COUNT', ARGV[5], 'JUSTID')
local out = {}
for _, id in ipairs(res[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p > 0 then out[#out + 1] = {id, p[1][4]} end
end
return {res[1], out, res[3] or {}}
