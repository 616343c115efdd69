-- Drop expired messages from up to one batch of queues whose oldest message
-- has expired (the expiry index finds them without visiting the others).
-- ARGV: prefix, now ms, max tracked drop topics, batch size
-- Returns: {messages dropped, queues visited}; a full batch means call again.
local now_ms, max_tracked = num(ARGV[2]), num(ARGV[3])
local due = redis.call(
  'ZRANGEBYSCORE', P .. 'expiry', '-inf', fmt(now_ms), 'LIMIT', 0, num(ARGV[4])
)
local dropped = 0
for _, queue in ipairs(due) do
  dropped = dropped + drop_expired(queue, now_ms, max_tracked)
end
return {dropped, #due}
