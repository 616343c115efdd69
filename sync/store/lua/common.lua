-- Shared by every store script; the Python side prepends it to each one.
--
-- Keys are built here from the prefix in ARGV[1], so the store needs one
-- Redis (or every key in one hash slot): Redis Cluster is not supported.
--   <p>epoch           "<id> <started ms>", created once with SET NX
--   <p>meta            hash: clock (ms, never steps back), order, last_ts,
--                      messages (stored now, all queues), bytes (charged
--                      against the store's byte budget, all queues)
--   <p>ledger          zset order -> "<queue> <seq>": every stored message in
--                      publication order, to drop the store's oldest first
--   <p>q:<queue>       hash: last_seq, last_ts, drop_seq, drop_ts
--                      (q:b, the broadcast queue, also un_* and x_* marks)
--   <p>m:<queue>       zset seq -> entry "<seq> <order> <ts> <expires>\n<topics>\n
--                      <head>\n<middle>\n<tail>": the envelope's JSON text
--                      around its timestamp and cursor (sync/services/envelopes.py)
--   <p>t:<queue>       zset timestamp -> seq, to find where a `since` starts
--   <p>expiry          zset queue -> expiry (ms) of its oldest message: the
--                      queues holding messages, soonest to expire first
--   <p>bt:marks/order  newest dropped broadcast per topic, and their order
--   <p>id:<message id> an append's reply, kept for the message's TTL
-- A user queue is "u:<user id>"; the broadcast queue is "b".

local P = ARGV[1]

-- Bytes charged per entry on top of its text: its members in m:, t: and the
-- ledger with their skiplist nodes, and its append's reply key (measured:
-- see tests/sync/store/test_redis.py, the budget against used_memory).
local ENTRY_OVERHEAD = 400

local function num(value, default)
  return tonumber(value) or default or 0
end

-- Integers as plain digits: tostring() would switch to exponents.
local function fmt(value)
  return string.format('%.0f', value)
end

-- The cluster's clock: the highest reading any instance passed in.
local function tick(now_ms)
  local clock = math.max(num(redis.call('HGET', P .. 'meta', 'clock')), now_ms)
  redis.call('HSET', P .. 'meta', 'clock', fmt(clock))
  return clock
end

-- One epoch for the whole cluster; a new one only if Redis lost the store.
local function ensure_epoch(candidate, clock)
  redis.call('SET', P .. 'epoch', candidate .. ' ' .. fmt(clock), 'NX')
  return redis.call('GET', P .. 'epoch')
end

local function parse(entry)
  local seq, order, ts, expires, topics =
    string.match(entry, '^(%d+) (%d+) (%d+) (%d+)\n([^\n]*)')
  return tonumber(seq), tonumber(ts), tonumber(expires), topics
end

-- An entry's position and audience only, for readers who skip its text.
local function header(entry)
  return string.match(entry, '^[^\n]*\n[^\n]*')
end

-- Count a new entry against the byte budget, in publication order.
local function charge(queue, seq, order, entry)
  redis.call('ZADD', P .. 'ledger', order, queue .. ' ' .. fmt(seq))
  redis.call('HINCRBY', P .. 'meta', 'bytes', #entry + ENTRY_OVERHEAD)
end

-- An entry left its queue: it no longer counts against the budget, and its
-- append's reply (kept for retries, see append.lua) goes with it.
local function release(queue, seq, entry)
  redis.call('ZREM', P .. 'ledger', queue .. ' ' .. fmt(seq))
  local id = string.match(entry, '\n{"id":"([^"]*)"')
  if id then
    redis.call('DEL', P .. 'id:' .. id)
  end
  local left = redis.call('HINCRBY', P .. 'meta', 'bytes', -(#entry + ENTRY_OVERHEAD))
  if left < 0 then  -- entries stored before the budget was kept
    redis.call('HSET', P .. 'meta', 'bytes', 0)
  end
end

-- The newest dropped broadcast per audience (see _BroadcastQueue in
-- message_queue.py, whose rules these are).
local function record_broadcast_drop(seq, ts, topics_json, max_tracked)
  local marks, order = P .. 'bt:marks', P .. 'bt:order'
  local topics = cjson.decode(topics_json)
  if #topics == 0 then
    redis.call('HSET', P .. 'q:b', 'un_seq', fmt(seq), 'un_ts', fmt(ts))
    -- Every reader counts the untargeted mark: older topic marks add nothing.
    for _, topic in ipairs(redis.call('ZRANGEBYSCORE', order, '-inf', fmt(seq))) do
      redis.call('HDEL', marks, topic)
    end
    redis.call('ZREMRANGEBYSCORE', order, '-inf', fmt(seq))
    return
  end
  for _, topic in ipairs(topics) do
    redis.call('HSET', marks, topic, fmt(seq) .. ' ' .. fmt(ts))
    redis.call('ZADD', order, fmt(seq), topic)
  end
  -- Bounded like the memory store: past max_tracked topics the oldest mark
  -- is folded into one shared mark that every topic reader counts.
  while redis.call('ZCARD', order) > max_tracked do
    local oldest = redis.call('ZPOPMIN', order)
    local mark = redis.call('HGET', marks, oldest[1])
    redis.call('HDEL', marks, oldest[1])
    local old_seq, old_ts = string.match(mark, '^(%d+) (%d+)$')
    if tonumber(old_seq) > num(redis.call('HGET', P .. 'q:b', 'x_seq')) then
      redis.call('HSET', P .. 'q:b', 'x_seq', old_seq, 'x_ts', old_ts)
    end
  end
end

-- Drop a queue's oldest message, remembering it for gap checks.
local function drop_oldest(queue, max_tracked)
  local messages = P .. 'm:' .. queue
  local oldest = redis.call('ZPOPMIN', messages)
  if #oldest == 0 then
    return 0
  end
  -- Timestamps grow with sequences, so the oldest stamp is the same message.
  redis.call('ZPOPMIN', P .. 't:' .. queue)
  local seq, ts, _, topics = parse(oldest[1])
  release(queue, seq, oldest[1])
  redis.call('HSET', P .. 'q:' .. queue, 'drop_seq', fmt(seq), 'drop_ts', fmt(ts))
  if queue == 'b' then
    record_broadcast_drop(seq, ts, topics, max_tracked)
  end
  redis.call('HINCRBY', P .. 'meta', 'messages', -1)
  local head = redis.call('ZRANGE', messages, 0, 0)
  if #head == 0 then
    redis.call('ZREM', P .. 'expiry', queue)
  else
    local _, _, expires = parse(head[1])
    redis.call('ZADD', P .. 'expiry', fmt(expires), queue)
  end
  return 1
end

-- Drop expired messages (always the oldest first); return how many.
local function drop_expired(queue, now_ms, max_tracked)
  local dropped = 0
  while true do
    local oldest = redis.call('ZRANGE', P .. 'm:' .. queue, 0, 0)
    if #oldest == 0 then
      return dropped
    end
    local _, _, expires = parse(oldest[1])
    if expires > now_ms then
      return dropped
    end
    dropped = dropped + drop_oldest(queue, max_tracked)
  end
end

-- Drop the store's oldest messages, whichever queue holds them, until its
-- bytes are within `max_bytes`; return how many.
local function enforce_budget(max_bytes, max_tracked)
  local dropped = 0
  while num(redis.call('HGET', P .. 'meta', 'bytes')) > max_bytes do
    local oldest = redis.call('ZRANGE', P .. 'ledger', 0, 0)
    if #oldest == 0 then
      return dropped
    end
    local queue, seq = string.match(oldest[1], '^(.+) (%d+)$')
    -- The queue's oldest sequence, from its small timestamp index.
    local first = redis.call('ZRANGE', P .. 't:' .. queue, 0, 0)
    if #first > 0 and tonumber(first[1]) == tonumber(seq) then
      dropped = dropped + drop_oldest(queue, max_tracked)
    else
      redis.call('ZREM', P .. 'ledger', oldest[1])  -- already gone
    end
  end
  return dropped
end
