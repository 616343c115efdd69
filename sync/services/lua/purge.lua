-- Drop expired messages from every queue that holds any; return how many.
-- ARGV: prefix, now ms, max tracked drop topics
local dropped = 0
for _, queue in ipairs(redis.call('SMEMBERS', P .. 'active')) do
  dropped = dropped + drop_expired(queue, num(ARGV[2]), num(ARGV[3]))
end
return dropped
