#!lua flags=no-writes
-- trace_read.lua: a chunk of a request's trace as one JSON text, so that the client parses
-- one reply instead of building a map per entry (10,000 entries: one json.loads).
-- KEYS[1]  trace  (stream)  t:{T}:trace:{C}
-- ARGV[1]  start  the id to read from ('-' = the beginning; '(' + id = after id)
-- ARGV[2]  count  (entries)  at most this many
-- Returns {json, last_id, n}: json is '[["<entry id>", <records>], ...]' (records: the
-- entry's field v, a JSON array), last_id the id of the last entry read ('' if none), n
-- the number of entries read. Reads only.

local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local parts = {}
for i, entry in ipairs(entries) do
  local fields, records = entry[2], '[]'
  for j = 1, #fields, 2 do
    if fields[j] == 'v' then records = fields[j + 1] end
  end
  parts[i] = '["' .. entry[1] .. '",' .. records .. ']'
end
local last = ''
if #entries > 0 then last = entries[#entries][1] end
return {'[' .. table.concat(parts, ',') .. ']', last, #entries}
