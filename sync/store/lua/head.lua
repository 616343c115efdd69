-- A reader's position now: after everything stored for it.
-- ARGV: prefix, epoch candidate, now ms, user id
-- Returns: {epoch, user last_seq, broadcast last_seq}
local epoch = ensure_epoch(ARGV[2], tick(num(ARGV[3])))
return {
  epoch,
  num(redis.call('HGET', P .. 'q:u:' .. ARGV[4], 'last_seq')),
  num(redis.call('HGET', P .. 'q:b', 'last_seq')),
}
