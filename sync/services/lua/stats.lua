-- Sizes of the queues holding messages: {queue, size, queue, size, ...}.
-- ARGV: prefix
local sizes = {}
for _, queue in ipairs(redis.call('SMEMBERS', P .. 'active')) do
  sizes[#sizes + 1] = queue
  sizes[#sizes + 1] = redis.call('ZCARD', P .. 'm:' .. queue)
end
return sizes
