#!lua
-- charge.lua: add cost units (tokens, cents...) to a request's usage; mark the request
-- spent when it reaches its unit budget (queued events of it are then dead-lettered and
-- later publishes refused).
-- KEYS[1]  budget  (hash)  t:{T}:budget:{C}: events, units, max_events, max_units
-- KEYS[2]  spent   (zset)  t:{T}:spent, correlation id -> mark expires at (ms)
-- ARGV[1]  units           (units)  what to add (> 0)
-- ARGV[2]  budget_units    (units)  the tenant's unit budget; 0 = none (max_units wins)
-- ARGV[3]  request_ttl_ms  (ms)     the budget and the mark live this long from now
-- ARGV[4]  correlation_id  C
-- Returns {units used now (as a string), 1 if the budget is spent now else 0}.
-- @include _lib.lua

local ttl = tonumber(ARGV[3])
local used = redis.call('HINCRBYFLOAT', KEYS[1], 'units', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
local limit = tonumber(redis.call('HGET', KEYS[1], 'max_units')) or tonumber(ARGV[2])
if limit > 0 and tonumber(used) >= limit then
  local now = eb_now_ms()
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
  return {used, 1}
end
return {used, 0}
