-- Drop, or with a dry run count, the messages of some queues: all of them,
-- or only the expired ones. Dropped messages leave drop marks, so readers
-- behind them get a gap (as with TTL and overflow).
-- ARGV: prefix, now ms, max tracked drop topics, mode ('all' or 'expired'),
--       dry run ('1' or '0'), queue ('' = a batch of the queues holding
--       messages, in the expiry index), batch size, offset in that index
-- Returns: {messages dropped or counted, queues visited}; a full batch
-- means call again (at the same offset when the batch was emptied).
local now_ms, max_tracked = num(ARGV[2]), num(ARGV[3])
local expired_only, dry_run = ARGV[4] == 'expired', ARGV[5] == '1'
-- Entries read per ZRANGE while counting expired messages (each up to a
-- payload's size: a small chunk keeps the script's memory small).
local COUNT_CHUNK = 16

local queues
if ARGV[6] ~= '' then
  queues = {ARGV[6]}
else
  local batch, offset = num(ARGV[7]), num(ARGV[8])
  queues = redis.call('ZRANGE', P .. 'expiry', offset, offset + batch - 1)
end

-- Messages expire oldest first, so the count stops at the first live one.
local function count_expired(queue)
  local count, start = 0, 0
  while true do
    local entries = redis.call(
      'ZRANGE', P .. 'm:' .. queue, start, start + COUNT_CHUNK - 1
    )
    for _, entry in ipairs(entries) do
      local _, _, expires = parse(entry)
      if expires > now_ms then
        return count
      end
      count = count + 1
    end
    if #entries < COUNT_CHUNK then
      return count
    end
    start = start + COUNT_CHUNK
  end
end

local function drop_all(queue)
  local dropped = 0
  for _ = 1, redis.call('ZCARD', P .. 'm:' .. queue) do
    dropped = dropped + drop_oldest(queue, max_tracked)
  end
  return dropped
end

local total = 0
for _, queue in ipairs(queues) do
  if dry_run and expired_only then
    total = total + count_expired(queue)
  elseif dry_run then
    total = total + redis.call('ZCARD', P .. 'm:' .. queue)
  elseif expired_only then
    total = total + drop_expired(queue, now_ms, max_tracked)
  else
    total = total + drop_all(queue)
  end
end
return {total, #queues}
