-- Node presence: how many gateway nodes share the limits right now, for the
-- credit a node gives a subject it knows nothing about (limiter.go). One key
-- for the whole cluster, no hash tag needed.
--
-- KEYS[1] zset  node id -> last heartbeat (ms, Redis clock)
-- ARGV: 1 node id, 2 member TTL (ms), 3 "1" to leave instead of beating.
--
-- Members older than the TTL are dropped; the key itself expires two TTLs
-- after the last heartbeat of any node. Returns the live members.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
return redis.call('ZCARD', KEYS[1])
