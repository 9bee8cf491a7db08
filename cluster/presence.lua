-- Node presence: how many gateway nodes share the limits right now, for the
-- credit a node gives a subject it knows nothing about (limiter.go). One key
-- for the whole cluster, no hash tag needed.
--
-- KEYS[1] zset  node id -> last heartbeat (ms, Redis clock)
-- ARGV: 1 node id, 2 member TTL (ms), 3 "1" to leave instead of beating,
--       4 "1" if this node's last heartbeat was answered well within the
--       TTL (so its member must still be there).
--
-- Members older than the TTL are dropped; the key itself expires two TTLs
-- after the last heartbeat of any node. Returns {live members, lost}: lost
-- is 1 when the node expected its member and it is gone, i.e. Redis
-- restarted empty or was flushed (outage.go re-seeds every subject then).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
local lost = 0
if ARGV[4] == '1' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then lost = 1 end
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
return {redis.call('ZCARD', KEYS[1]), lost}
