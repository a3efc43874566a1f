#!lua
-- publish.lua: idempotent publish of a batch of events (one or more, in order), then one
-- trim that keeps unacknowledged entries.
-- KEYS[1]    stream   (stream)  t:{T}:events:{S}
-- KEYS[2]    registry (set)     t:{T}:streams, the tenant's stream names
-- KEYS[2+i]  marker   (string)  t:{T}:dedupe:{S}:{event_id} of event i -> message id of its
--                               first publish
-- ARGV[1]  dedupe_ttl_ms   (ms)       how long a marker lives
-- ARGV[2]  maxlen          (entries)  retention target; 0 = never trim
-- ARGV[3]  slack           (entries)  growth past maxlen allowed before trimming
-- ARGV[4]  stream_name     the name added to the registry
-- ARGV[5..] for each event i, in the order of its marker: n (the number of items that
--           follow), then field, value, field, value, ...  (n items: the encoded event)
-- Returns {message_id_1, written_1, message_id_2, written_2, ...}: written 1 when the event
-- was added now, 0 when its event_id was already published within the dedupe window
-- (earlier, or earlier in this batch): nothing written for it, the first message id.
-- Write order per event: XADD, then its marker. Under OOM the shebang makes Redis refuse the
-- whole script before it runs, so nothing is half done.
-- @include _lib.lua

local out = {}
local written = false
local at = 5
for k = 3, #KEYS do
  local n = tonumber(ARGV[at])
  local existing = redis.call('GET', KEYS[k])
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, at + 1, at + n))
    redis.call('SET', KEYS[k], id, 'PX', ARGV[1])
    out[#out + 1] = id
    out[#out + 1] = 1
    written = true
  end
  at = at + n + 1
end
if written then
  redis.call('SADD', KEYS[2], ARGV[4])
  local maxlen = tonumber(ARGV[2])
  if maxlen > 0 then eb_safe_trim(KEYS[1], maxlen, tonumber(ARGV[3])) end
end
return out
