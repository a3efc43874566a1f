#!lua
-- replay.lua: move one dead letter back into work with its retry count reset.
-- KEYS[1]  dlq     (stream)  t:{T}:events:{S}:dlq
-- KEYS[2]  target  (stream)  the group's retry stream t:{T}:events:{S}:retry:{G} (only the
--                            group that failed sees it again), or the main stream
-- ARGV[1]  dlq_id  the dead letter's id in KEYS[1]
-- Copies the event's fields (reserved _ fields dropped), adds _retry_count=0,
-- _replay_of=<dlq_id> and _origin_id=<the letter's _dlq_message_id> (so a later dead letter
-- still names the published id), XADDs to KEYS[2], then XDELs the dead letter.
-- Returns the new message id, or false when no such dead letter exists.

local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local fields = {}
local original = found[1][2]
local origin = nil
for i = 1, #original, 2 do
  if original[i] == '_dlq_message_id' then origin = original[i + 1] end
  if string.sub(original[i], 1, 1) ~= '_' then
    fields[#fields + 1] = original[i]
    fields[#fields + 1] = original[i + 1]
  end
end
fields[#fields + 1] = '_retry_count'
fields[#fields + 1] = '0'
fields[#fields + 1] = '_replay_of'
fields[#fields + 1] = ARGV[1]
if origin then
  fields[#fields + 1] = '_origin_id'
  fields[#fields + 1] = origin
end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
