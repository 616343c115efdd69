-- Stamp and append one message, atomically for the whole cluster.
--
-- Why Lua rather than Stream ids: a message's position is three numbers
-- that must move together (its queue's sequence, the store-wide order that
-- merges a reader's two queues, and a timestamp pushed past what readers
-- of its queue already hold). Stream ids give one number per stream; the
-- script assigns all three, appends, and enforces the cap as one step that
-- no other instance can interleave with.
--
-- ARGV: prefix, epoch candidate, now ms, ttl ms, max messages per queue,
--       max tracked drop topics, kind ('u' or 'b'), user id, topics json,
--       envelope text ("<head>\n<middle>\n<tail>"), message id, publishing
--       instance id, the store's byte budget
-- Returns: {epoch, seq, order, timestamp, broadcast last_seq, messages dropped
--          over the queue's cap, messages dropped over the byte budget} (the
--          two counts for the metrics; absent in a repeated answer)
--
-- Idempotent by message id for as long as the message lives: a client that
-- retries after a lost reply gets the first append's answer, so a message
-- is never stored twice.
local appended_key = P .. 'id:' .. ARGV[11]
if ARGV[11] ~= '' then
  local earlier = redis.call('GET', appended_key)
  if earlier then
    return cjson.decode(earlier)
  end
end

local now_ms = num(ARGV[3])
local clock = tick(now_ms)
local epoch = ensure_epoch(ARGV[2], clock)
local is_broadcast = ARGV[7] == 'b'
local queue = is_broadcast and 'b' or ('u:' .. ARGV[8])
local meta, qkey, bkey = P .. 'meta', P .. 'q:' .. queue, P .. 'q:b'

-- A user message goes after its queue and the broadcast queue; a broadcast
-- after every message stored (see MemoryMessageStore._next_timestamp).
local after
if is_broadcast then
  after = num(redis.call('HGET', meta, 'last_ts')) + 1
else
  after = math.max(
    num(redis.call('HGET', qkey, 'last_ts')),
    num(redis.call('HGET', bkey, 'last_ts'))
  ) + 1
end
local ts = math.max(clock, after)
if ts > num(redis.call('HGET', meta, 'last_ts')) then
  redis.call('HSET', meta, 'last_ts', fmt(ts))
end
local order = redis.call('HINCRBY', meta, 'order', 1)
local seq = redis.call('HINCRBY', qkey, 'last_seq', 1)
redis.call('HSET', qkey, 'last_ts', fmt(ts))

local expires = now_ms + num(ARGV[4])
local entry = fmt(seq) .. ' ' .. fmt(order) .. ' ' .. fmt(ts) .. ' ' .. fmt(expires)
  .. '\n' .. ARGV[9] .. '\n' .. ARGV[10]
redis.call('ZADD', P .. 'm:' .. queue, seq, entry)
redis.call('ZADD', P .. 't:' .. queue, fmt(ts), seq)
charge(queue, seq, order, entry)
redis.call('HINCRBY', meta, 'messages', 1)
-- NX: a queue already holding messages keeps its oldest one's expiry.
redis.call('ZADD', P .. 'expiry', 'NX', fmt(expires), queue)

-- The reply, kept for retries until the message leaves its queue (see
-- release in common.lua) or its TTL passes, whichever comes first.
local reply = {epoch, seq, order, fmt(ts), num(redis.call('HGET', bkey, 'last_seq'))}
if ARGV[11] ~= '' then
  redis.call('SET', appended_key, cjson.encode(reply), 'PX', fmt(math.max(num(ARGV[4]), 1)))
end

local max_messages, max_tracked = num(ARGV[5]), num(ARGV[6])
local overflow = 0
while redis.call('ZCARD', P .. 'm:' .. queue) > max_messages do
  overflow = overflow + drop_oldest(queue, max_tracked)
end
-- The store as a whole, like the memory store: its oldest messages go
-- first, so no user can fill Redis for everyone.
local evicted = enforce_budget(num(ARGV[13]), max_tracked)
-- Wakes long polls on every instance (their listeners filter by queue), and
-- hands the entry to every other instance's delivery hub: one message per
-- instance, not per socket.
redis.call('PUBLISH', P .. 'wake', queue .. '\n' .. ARGV[12] .. '\n' .. entry)
reply[6] = overflow
reply[7] = evicted
return reply
