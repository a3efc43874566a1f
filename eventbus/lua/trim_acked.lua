#!lua
-- trim_acked.lua: trim a stream's acknowledged history without touching unread entries.
-- KEYS[1]  stream  (stream)  a main stream or a group's retry stream
-- ARGV[1]  maxlen  (entries) keep about this many (0 = keep only what a group still needs)
-- Returns the number of entries removed. Entries still pending in some group, or not yet
-- read by some group, are never removed (see eb_safe_trim).
-- @include _lib.lua

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return eb_safe_trim(KEYS[1], tonumber(ARGV[1]), 0)
