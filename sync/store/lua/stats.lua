-- The store's figures, from counters kept by every change.
-- ARGV: prefix, most queues to list one by one
-- Returns: {queues holding messages, messages, {queue, size, ...}, bytes
-- charged against the byte budget}; the
-- per-queue sizes cost one ZCARD each, so they are listed for small stores only.
local queues = redis.call('ZCARD', P .. 'expiry')
local messages = num(redis.call('HGET', P .. 'meta', 'messages'))
local sizes = {}
if queues <= num(ARGV[2]) then
  for _, queue in ipairs(redis.call('ZRANGE', P .. 'expiry', 0, -1)) do
    sizes[#sizes + 1] = queue
    sizes[#sizes + 1] = redis.call('ZCARD', P .. 'm:' .. queue)
  end
end
return {queues, messages, sizes, num(redis.call('HGET', P .. 'meta', 'bytes'))}
