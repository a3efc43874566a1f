#!lua
-- promote_due.lua: move retries whose time has come into the group's retry stream.
-- KEYS[1]  schedule      (zset)    t:{T}:sched:{S}:{G}; members from ack_and_retry.lua
-- KEYS[2]  retry_stream  (stream)  t:{T}:events:{S}:retry:{G}, read by group G only
-- ARGV[1]  limit         (entries) most members to move in one call
-- Returns {moved, wait_ms}: wait_ms = ms until the next member is due, -1 if none is left.
-- XADD comes before ZREM, so a refused write leaves the member in the schedule.
-- @include _lib.lua

local now = eb_now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local entry = cjson.decode(member)
  redis.call('XADD', KEYS[2], '*', unpack(entry['f']))
  redis.call('ZREM', KEYS[1], member)
end
if #due > 0 then eb_safe_trim(KEYS[2], 0, 100) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return {#due, -1} end
local wait = tonumber(nxt[2]) - now
if wait < 0 then wait = 0 end
return {#due, wait}
