-- A consistent view of a reader's two queues, for sync.services.paging.
--
-- Expired messages of both queues are dropped first; then the queues'
-- counters and drop marks, where the read starts, and the entries after
-- that start, from each queue until one entry past a bound of the page:
-- limit + 1 messages, or max_bytes of text crossed (a page holds at least
-- one message). Whatever page Python's paging cuts from the two queues
-- merged, each queue has returned all it needs, and Redis is never asked
-- for more than about a page. Broadcasts the reader cannot see come back
-- as their header only (position and topics), so cursors move past them
-- without their text crossing the wire. The paging rules stay in Python.
--
-- ARGV: prefix, epoch candidate, now ms, max tracked drop topics, user id,
--       mode ('cursor' or 'since'), cursor epoch or since, cursor user seq,
--       cursor broadcast seq, limit, topics json, max bytes (0: no bound)
-- Returns: {epoch, clock, user state, broadcast state, topic marks,
--           user from, broadcast from, user entries, broadcast entries,
--           messages dropped as expired}

local now_ms = num(ARGV[3])
local clock = tick(now_ms)
local epoch = ensure_epoch(ARGV[2], clock)
local max_tracked = num(ARGV[4])
local queue = 'u:' .. ARGV[5]
local limit = num(ARGV[10])
local topics = cjson.decode(ARGV[11])
local max_bytes = num(ARGV[12])
-- Entries fetched per ZRANGEBYSCORE: a bound on what one call holds in memory.
local BATCH = 16

local expired = drop_expired(queue, now_ms, max_tracked)
  + drop_expired('b', now_ms, max_tracked)

local user_state = redis.call(
  'HMGET', P .. 'q:' .. queue, 'last_seq', 'last_ts', 'drop_seq', 'drop_ts'
)
local broadcast_state = redis.call(
  'HMGET', P .. 'q:b', 'last_seq', 'last_ts', 'drop_seq', 'drop_ts',
  'un_seq', 'un_ts', 'x_seq', 'x_ts'
)
local marks = {}
if #topics > 0 then
  marks = redis.call('HMGET', P .. 'bt:marks', unpack(topics))
end
local user_last, broadcast_last = num(user_state[1]), num(broadcast_state[1])

local function seq_at_or_before(name, since, last_seq)
  local found = redis.call(
    'ZREVRANGEBYSCORE', P .. 't:' .. name, since, '-inf', 'LIMIT', 0, 1
  )
  if #found > 0 then
    return num(found[1])
  end
  local first = redis.call('ZRANGE', P .. 'm:' .. name, 0, 0, 'WITHSCORES')
  if #first == 0 then
    return last_seq
  end
  return num(first[2]) - 1
end

local user_from, broadcast_from
if ARGV[6] == 'cursor' then
  user_from, broadcast_from = num(ARGV[8]), num(ARGV[9])
  local epoch_id = string.match(epoch, '^(%S+)')
  if ARGV[7] ~= epoch_id or user_from > user_last or broadcast_from > broadcast_last then
    user_from, broadcast_from = 0, 0  -- untrusted: paging replays from the start
  end
else
  user_from = seq_at_or_before(queue, ARGV[7], user_last)
  broadcast_from = seq_at_or_before('b', ARGV[7], broadcast_last)
end

local wanted = {}
for _, topic in ipairs(topics) do
  wanted[topic] = true
end

local function visible(entry)
  local _, _, _, topics_json = parse(entry)
  local entry_topics = cjson.decode(topics_json)
  if #entry_topics == 0 then
    return true
  end
  for _, topic in ipairs(entry_topics) do
    if wanted[topic] then
      return true
    end
  end
  return false
end

-- Entries of `queue` after sequence `from`, until one past a bound of the
-- page; `show(entry)` is false for an entry the reader cannot see (its
-- header only is kept, and it counts toward no bound).
local function entries_after(queue, from, show)
  local found, count, bytes, start = {}, 0, 0, '(' .. fmt(from)
  while true do
    local entries = redis.call(
      'ZRANGEBYSCORE', P .. 'm:' .. queue, start, '+inf', 'LIMIT', 0, BATCH
    )
    for _, entry in ipairs(entries) do
      if show(entry) then
        found[#found + 1] = entry
        count = count + 1
        -- Its envelope's text only: never more than Python's paging counts
        -- for it, so this side never stops short of the page Python cuts.
        bytes = bytes + #entry - #header(entry)
        if count > limit or (max_bytes > 0 and bytes > max_bytes and count > 1) then
          return found
        end
      else
        found[#found + 1] = header(entry)
      end
    end
    if #entries < BATCH then
      return found
    end
    start = '(' .. fmt(parse(entries[#entries]))
  end
end

local function always()
  return true
end

return {
  epoch, fmt(clock), user_state, broadcast_state, marks,
  user_from, broadcast_from, entries_after(queue, user_from, always),
  entries_after('b', broadcast_from, visible), expired,
}
