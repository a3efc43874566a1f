-- _lib.lua: helpers included (by the loader) into scripts that declare `-- @include _lib.lua`.
-- Stream ids are "<ms>-<seq>"; both parts fit a Lua number for any real id.

local function eb_parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function eb_id_lt(a, b)
  local am, as = eb_parse_id(a)
  local bm, bs = eb_parse_id(b)
  return am < bm or (am == bm and as < bs)
end

local function eb_next_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end

local function eb_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The lowest id that some group still needs: its first pending entry, or the first entry
-- after its last-delivered-id. Entries below it are acknowledged by every group.
-- Returns nil when the stream has no group.
local function eb_safe_floor(key)
  local floor = nil
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local name, last, pending
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1]
      elseif g[i] == 'last-delivered-id' then last = g[i + 1]
      elseif g[i] == 'pending' then pending = g[i + 1] end
    end
    local bound = eb_next_id(last)
    if pending > 0 then
      local first = redis.call('XPENDING', key, name)[2]
      if eb_id_lt(first, bound) then bound = first end
    end
    if floor == nil or eb_id_lt(bound, floor) then floor = bound end
  end
  return floor
end

-- Trim KEY down to MAXLEN entries (MAXLEN 0 = every acknowledged entry) but never past the
-- safe floor: an unread or unacknowledged entry is kept, however long the stream gets.
-- A stream with no consumer group is not trimmed at all: its entries are waiting for the
-- first group (created from the start of the stream), and trimming them would lose them.
-- SLACK lets the stream grow a little past MAXLEN before any work is done (like `~`).
-- Returns the number of entries removed.
local function eb_safe_trim(key, maxlen, slack)
  local len = redis.call('XLEN', key)
  if len <= maxlen + slack then return 0 end
  local floor = eb_safe_floor(key)
  if floor == nil then return 0 end
  -- First whole nodes below the floor, at most LEN - MAXLEN entries (MINID ~ never removes
  -- a node holding an entry at or above the floor): O(nodes), where the XRANGE below would
  -- copy every entry into Lua (seconds, and as much memory, once a group has caught up on
  -- a deep backlog). What is left to trim then lies within one node.
  local removed = redis.call('XTRIM', key, 'MINID', '~', floor, 'LIMIT', len - maxlen)
  len = len - removed
  if len <= maxlen then return removed end
  local victims = redis.call('XRANGE', key, '-', '(' .. floor, 'COUNT', len - maxlen)
  if #victims == 0 then return removed end
  return removed + redis.call('XTRIM', key, 'MINID', eb_next_id(victims[#victims][1]))
end

-- The fields of entry ID of stream KEY if it is pending in GROUP on CONSUMER (the only
-- one who may decide its outcome). Returns nil, 0 when it is not pending on that
-- consumer (acked, or claimed by another); nil, -1 when it is pending but was deleted
-- from the stream (it is then acknowledged: there is nothing left to keep).
local function eb_owned_entry(key, group, id, consumer)
  local owner = redis.call('XPENDING', key, group, id, id, 1)
  if #owner == 0 or owner[1][2] ~= consumer then return nil, 0 end
  local found = redis.call('XRANGE', key, id, id)
  if #found == 0 then
    redis.call('XACK', key, group, id)
    return nil, -1
  end
  return found[1][2], nil
end
