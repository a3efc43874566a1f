#!lua
-- ack_and_dead_letter.lua: copy a delivery into the dead-letter stream, then acknowledge it.
-- KEYS[1]  source    (stream)  the stream the entry was read from (main or retry stream)
-- KEYS[2]  dlq       (stream)  t:{T}:events:{S}:dlq
-- ARGV[1]  group     the consumer group
-- ARGV[2]  id        message id in KEYS[1]
-- ARGV[3]  consumer  the consumer that owns the delivery
-- ARGV[4..] field, value, ...  dead-letter metadata (_dlq_* fields)
-- The entry's own fields are copied byte for byte from the stream (so undecodable entries
-- survive intact), its _retry_count included (absent = 0: the retries it really had, on
-- every path, the reclaimer's poison path too); old _dlq_* fields are replaced by the
-- metadata, and _dlq_failed_at_ms is set from the server clock. A retried entry's
-- _origin_id (its id in the main stream) replaces the _dlq_message_id given, so the DLQ
-- names the published id.
-- Returns the DLQ message id; 0 when the entry is no longer pending for this consumer;
-- -1 when it is pending but gone from the stream (it is acknowledged: nothing to keep).
-- The XADD comes before the XACK, so a refused write leaves the entry pending.
-- @include _lib.lua

local original, status = eb_owned_entry(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if original == nil then return status end
local fields = {}
local origin = nil
local retries = '0'
for i = 1, #original, 2 do
  local name = original[i]
  if name == '_origin_id' then
    origin = original[i + 1]
  elseif name == '_retry_count' then
    retries = original[i + 1]
  elseif string.sub(name, 1, 5) ~= '_dlq_' then
    fields[#fields + 1] = name
    fields[#fields + 1] = original[i + 1]
  end
end
fields[#fields + 1] = '_retry_count'
fields[#fields + 1] = retries
for i = 4, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  if ARGV[i] == '_dlq_message_id' and origin then
    fields[#fields + 1] = origin
  else
    fields[#fields + 1] = ARGV[i + 1]
  end
end
fields[#fields + 1] = '_dlq_failed_at_ms'
fields[#fields + 1] = tostring(eb_now_ms())
local dlq_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return dlq_id
