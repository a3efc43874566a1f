#!lua
-- publish.lua: idempotent publish of one event, then a trim that keeps unacknowledged entries.
-- KEYS[1]  stream  (stream)  t:{T}:events:{S}
-- KEYS[2]  marker  (string)  t:{T}:dedupe:{S}:{event_id} -> message id of the first publish
-- KEYS[3]  registry (set)    t:{T}:streams, the tenant's stream names
-- ARGV[1]  dedupe_ttl_ms   (ms)       how long the marker lives
-- ARGV[2]  maxlen          (entries)  retention target; 0 = never trim
-- ARGV[3]  slack           (entries)  growth past maxlen allowed before trimming
-- ARGV[4]  stream_name     the name added to the registry
-- ARGV[5..] field, value, field, value, ...  the encoded event
-- Returns {message_id, 1} when written, {message_id, 0} when the event_id was already
-- published within the dedupe window (nothing written).
-- Write order: XADD, then the marker. Under OOM the shebang makes Redis refuse the whole
-- script before it runs, so nothing is half done.
-- @include _lib.lua

local existing = redis.call('GET', KEYS[2])
if existing then return {existing, 0} end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[4])
local maxlen = tonumber(ARGV[2])
if maxlen > 0 then eb_safe_trim(KEYS[1], maxlen, tonumber(ARGV[3])) end
return {id, 1}
