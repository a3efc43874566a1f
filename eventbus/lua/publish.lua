#!lua
-- publish.lua: idempotent publish of a batch of events (one or more, in order), with the
-- agent guards of their requests (halt, budget) and their trace, then one trim that keeps
-- unacknowledged entries.
-- KEYS[1]    stream   (stream)  t:{T}:events:{S}
-- KEYS[2]    registry (set)     t:{T}:streams, the tenant's stream names
-- KEYS[3]    halted   (hash)    t:{T}:halted, correlation id -> halted at (ms)
-- KEYS[4]    spent    (zset)    t:{T}:spent, correlation ids that spent their budget
--                               (score = when the mark expires, ms)
-- then for each event i, in order:
--   marker  (string)  t:{T}:dedupe:{S}:{event_id} -> message id of its first publish
--   only if the event has a correlation id C:
--   budget  (hash)    t:{T}:budget:{C}: events, units, max_events, max_units
--   trace   (stream)  t:{T}:trace:{C}, only when ARGV[8] > 0 (the trace is on)
-- ARGV[1]  dedupe_ttl_ms   (ms)       how long a marker lives
-- ARGV[2]  maxlen          (entries)  retention target; 0 = never trim
-- ARGV[3]  slack           (entries)  growth past maxlen allowed before trimming
-- ARGV[4]  stream_name     the name added to the registry (and written to the trace)
-- ARGV[5]  budget_events   (events)   the tenant's budget per request; 0 = none
-- ARGV[6]  budget_units    (units)    the tenant's unit budget per request; 0 = none
-- ARGV[7]  request_ttl_ms  (ms)       budget, trace and spent mark live this long after
--                                     the request's last event
-- ARGV[8]  trace_max       (entries)  trace length cap (about, in entries); 0 = no trace
-- ARGV[9..] for each event i: n (the number of field items), its correlation id ('' =
--           none), its trace record without the message id ('' = none; see below), then
--           n items: field, value, field, value, ... (the encoded event)
-- Returns {message_id_1, written_1, message_id_2, written_2, ...}: written 1 when the event
-- was added now, 0 when its event_id was already published within the dedupe window
-- (earlier, or earlier in this batch): nothing written for it, the first message id.
-- Or, when a guard refuses an event that would be written: {'REFUSED', i, reason, C,
-- detail} and nothing of the batch is written (reason 'halted' or 'budget_exceeded'; a
-- budget refusal marks C as spent in KEYS[4], so queued events of C are dead-lettered).
-- A budget applies when the budget key exists (set_budget, or charged before) or a tenant
-- budget is given; only events written are charged (duplicates are free).
-- Trace: one entry per request per call, one field v: a JSON array of records
-- ["published", event id, parent id or "", source agent, event type, stream, message id];
-- the caller sends each record up to the message id ('["published",...,"<stream>","'),
-- this script appends the id and '"]'. The entry's id gives the time (eventbus/trace.py
-- reads it). One entry and one PEXPIRE per request and call keep the trace cheap.
-- Checks first, then writes: per event XADD and marker; per request one budget charge
-- and one trace entry. Under OOM the
-- shebang makes Redis refuse the whole script before it runs, so nothing is half done.
-- @include _lib.lua

local ttl = tonumber(ARGV[7])
local trace_max = tonumber(ARGV[8])
local events = {}
local seen = {}
local at, k = 9, 5
while at <= #ARGV do
  local n = tonumber(ARGV[at])
  local e = {first = at + 3, last = at + 2 + n, cid = ARGV[at + 1], marker = KEYS[k]}
  e.record = ARGV[at + 2]
  k = k + 1
  if e.cid ~= '' then
    e.budget = KEYS[k]
    k = k + 1
    if trace_max > 0 then
      e.trace = KEYS[k]
      k = k + 1
    end
  end
  e.dup_of = seen[e.marker]
  if not e.dup_of then
    e.existing = redis.call('GET', e.marker)
    if not e.existing then seen[e.marker] = #events + 1 end
  end
  events[#events + 1] = e
  at = e.last + 1
end

-- Checks: nothing is written unless every new event may be.
local budgets = {}
for i, e in ipairs(events) do
  if e.cid ~= '' and not (e.existing or e.dup_of) then
    local b = budgets[e.cid]
    if not b then  -- once per request and call
      if redis.call('HEXISTS', KEYS[3], e.cid) == 1 then
        return {'REFUSED', i, 'halted', e.cid, 'halted by an operator'}
      end
      local h = redis.call('HMGET', e.budget, 'events', 'units', 'max_events', 'max_units')
      b = {
        exists = h[1] ~= false or h[3] ~= false or h[4] ~= false,
        events = tonumber(h[1]) or 0,
        units = tonumber(h[2]) or 0,
        max_events = tonumber(h[3]) or tonumber(ARGV[5]),
        max_units = tonumber(h[4]) or tonumber(ARGV[6]),
      }
      b.on = b.exists or b.max_events > 0 or b.max_units > 0
      budgets[e.cid] = b
    end
    local over = nil
    if b.max_events > 0 and b.events + 1 > b.max_events then
      over = string.format('%d of %d events used', b.events, b.max_events)
    elseif b.max_units > 0 and b.units >= b.max_units then
      over = string.format('%.17g of %.17g units used', b.units, b.max_units)
    end
    if over then
      local now = eb_now_ms()
      redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
      redis.call('ZADD', KEYS[4], now + ttl, e.cid)
      return {'REFUSED', i, 'budget_exceeded', e.cid, over}
    end
    if b.on then b.events = b.events + 1 end
  end
end

-- Writes.
local traces, trace_keys, charged = {}, {}, {}
local out = {}
local written = false
for _, e in ipairs(events) do
  if e.dup_of or e.existing then
    out[#out + 1] = e.existing or events[e.dup_of].id
    out[#out + 1] = 0
  else
    local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, e.first, e.last))
    redis.call('SET', e.marker, id, 'PX', ARGV[1])
    e.id = id
    out[#out + 1] = id
    out[#out + 1] = 1
    written = true
    if e.cid ~= '' and budgets[e.cid].on then
      local b = budgets[e.cid]
      if not b.charged then
        b.charged, b.key = 0, e.budget
        charged[#charged + 1] = b
      end
      b.charged = b.charged + 1
    end
    if e.trace then
      local records = traces[e.trace]
      if not records then
        records = {}
        traces[e.trace] = records
        trace_keys[#trace_keys + 1] = e.trace
      end
      records[#records + 1] = e.record .. id .. '"]'
    end
  end
end
for _, b in ipairs(charged) do
  redis.call('HINCRBY', b.key, 'events', b.charged)
  redis.call('PEXPIRE', b.key, ttl)
end
for _, key in ipairs(trace_keys) do
  redis.call('XADD', key, 'MAXLEN', '~', trace_max, '*', 'v',
    '[' .. table.concat(traces[key], ',') .. ']')
  redis.call('PEXPIRE', key, ttl)
end
if written then
  redis.call('SADD', KEYS[2], ARGV[4])
  local maxlen = tonumber(ARGV[2])
  if maxlen > 0 then eb_safe_trim(KEYS[1], maxlen, tonumber(ARGV[3])) end
end
return out
