#!lua
-- ack_and_retry.lua: schedule a retry of a failed delivery, then acknowledge it.
-- KEYS[1]  source    (stream)  the stream the entry was read from (main or retry stream)
-- KEYS[2]  schedule  (zset)    t:{T}:sched:{S}:{G}; score = due time (ms, server clock)
-- ARGV[1]  group        the consumer group
-- ARGV[2]  id           message id in KEYS[1]
-- ARGV[3]  consumer     the consumer that owns the delivery
-- ARGV[4]  delay_ms     (ms) from now (server TIME) until the retry is due
-- ARGV[5]  retry_count  the count the retried entry will carry in _retry_count
-- The entry's fields are copied byte for byte from the stream into the schedule member,
-- JSON {"s": source, "id": id, "f": [field, value, ...]}, with
-- _origin_id = the id the event had in the main stream (kept from an earlier retry, or id).
-- Returns the due time (ms since epoch, server clock); 0 when the entry is no longer
-- pending for this consumer (acked or claimed by another consumer): nothing is done;
-- -1 when it is pending but gone from the stream (it is acknowledged: nothing to retry).
-- The schedule is written before the XACK, so a refused write leaves the entry pending.
-- @include _lib.lua

local original, status = eb_owned_entry(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if original == nil then return status end
local fields = {}
local origin = ARGV[2]
for i = 1, #original, 2 do
  if original[i] == '_origin_id' then
    origin = original[i + 1]
  elseif original[i] ~= '_retry_count' then
    fields[#fields + 1] = original[i]
    fields[#fields + 1] = original[i + 1]
  end
end
fields[#fields + 1] = '_retry_count'
fields[#fields + 1] = ARGV[5]
fields[#fields + 1] = '_origin_id'
fields[#fields + 1] = origin
local member = cjson.encode({s = KEYS[1], id = ARGV[2], f = fields})
local due = eb_now_ms() + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], due, member)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return due
