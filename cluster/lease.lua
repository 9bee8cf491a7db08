-- Lease quota of one subject: "at most N messages in any window W", shared by
-- every gateway node. Atomic (one script), all keys in one hash slot.
--
-- KEYS[1] zset  grant id -> expiry (us, Redis clock)
-- KEYS[2] hash  grant id -> units still counted; field "sum" = their total
-- KEYS[3] zset  node id -> last request (us): nodes active on this subject
--
-- ARGV: 1 N, 2 W (us), 3 lease lifetime L (us, at most W), 4 node id, 5 new grant id,
--       6 want (units to lease), 7 debt (units already admitted on credit),
--       8 min-grant divisor d (no grant below N/(d*nodes) while that
--       much is free), 9 report count, then per report:
--       grant id, unused units, us since its last use (-1: never used);
--       then: expect (1: this node had an answer on the subject less
--       than 2W ago, so its member in KEYS[3] must be there), a restore
--       count, then per restore: units, us since the last of them was
--       admitted, always (1: count it; 0: count it only if the subject was
--       lost). See outage.go.
--
-- A subject is lost when expect is 1 and this node's member is gone: Redis
-- restarted empty (or was flushed) since the node's last call. Restores
-- are messages a node admitted that Redis may not count (made while it
-- was unreachable, or counted by a Redis that lost them); each becomes a
-- grant expiring W after its last message, counted even past N. A lost
-- subject with nothing restored in the same call gets no lease: the node
-- writes its admissions back first.
--
-- A grant made at t is counted until t+W+L: the node spends it only during
-- [t, t+L), so every use stays counted for a full W after it. A report
-- shortens that: unused units are dropped at once, used ones are kept until
-- last use + W. Debt was admitted before this call, so it is counted until
-- now+W. So every grant spent in some window W is still counted when the
-- last of them is made, and the script never lets the count pass N (except
-- by debt, which is recorded whatever the count: it already happened).
--
-- A lease is min(want, free, max(free/(2*nodes), N/(d*nodes))): half a fair
-- share of what is free, but not crumbs while a batch is free.
--
-- Returns {lease, N - counted, active nodes, wait, lost (1/0), units
-- restored}: wait (us, when no lease
-- was granted but one was wanted) is until min(want, min grant) units
-- expire, or until a lease still being spent ends (it may come back
-- partly unused), whichever is first.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local N = tonumber(ARGV[1])
local W = tonumber(ARGV[2])
local L = tonumber(ARGV[3])
local want = tonumber(ARGV[6])
local debt = tonumber(ARGV[7])
local sum = tonumber(redis.call('HGET', KEYS[2], 'sum') or '0')
local base = 10 + 3 * tonumber(ARGV[9])
local expect = tonumber(ARGV[base] or '0')
local nres = tonumber(ARGV[base + 1] or '0')

for i = 0, tonumber(ARGV[9]) - 1 do
  local id = ARGV[10 + 3 * i]
  local unused = tonumber(ARGV[11 + 3 * i])
  local ago = tonumber(ARGV[12 + 3 * i])
  local c = redis.call('HGET', KEYS[2], id)
  if c then
    c = tonumber(c)
    if unused > c then unused = c end
    sum = sum - unused
    c = c - unused
    if c <= 0 then
      redis.call('HDEL', KEYS[2], id)
      redis.call('ZREM', KEYS[1], id)
    else
      redis.call('HSET', KEYS[2], id, c)
      if ago >= 0 then
        local exp = now - ago + W
        local cur = tonumber(redis.call('ZSCORE', KEYS[1], id))
        if cur and exp < cur then redis.call('ZADD', KEYS[1], exp, id) end
      end
    end
  end
end

local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(old) do
  sum = sum - tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('HDEL', KEYS[2], id)
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
if sum < 0 then sum = 0 end

-- KEYS[3] holds every node that called in the last 2W (the loss check);
-- those that called in the last W share the quota.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 2 * W)
local lost = 0
if expect == 1 and not redis.call('ZSCORE', KEYS[3], ARGV[4]) then lost = 1 end
redis.call('ZADD', KEYS[3], now, ARGV[4])
local n = redis.call('ZCOUNT', KEYS[3], now - W, '+inf')
if n < 1 then n = 1 end

local restored = 0
for i = 0, nres - 1 do
  local units = tonumber(ARGV[base + 2 + 3 * i])
  local exp = now - tonumber(ARGV[base + 3 + 3 * i]) + W
  if (ARGV[base + 4 + 3 * i] == '1' or lost == 1) and units > 0 and exp > now then
    local id = ARGV[5] .. '.' .. i
    redis.call('ZADD', KEYS[1], exp, id)
    redis.call('HSET', KEYS[2], id, units)
    sum = sum + units
    restored = restored + units
  end
end
if lost == 1 and nres == 0 then want = 0 end
local minGrant = math.max(1, math.floor(N / (tonumber(ARGV[8]) * n)))

local avail = N - sum - debt
local lease = 0
if want > 0 and avail > 0 then
  local share = math.floor(avail / (2 * n))
  if share < minGrant then share = minGrant end
  lease = math.min(want, avail, share)
end
local count = lease + debt
if count > 0 then
  local exp = now + W
  if lease > 0 then exp = exp + L end
  redis.call('ZADD', KEYS[1], exp, ARGV[5])
  redis.call('HSET', KEYS[2], ARGV[5], count)
  sum = sum + count
end
redis.call('HSET', KEYS[2], 'sum', sum)
-- No grant is counted past now + 2W (L <= W): keep the keys that long.
local ttl = math.floor(2 * W / 1000) + 1000
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end

local wait = 0
if lease == 0 and want > 0 then
  local need = math.min(want, minGrant) - (N - sum)
  local rows = redis.call('ZRANGE', KEYS[1], 0, 63, 'WITHSCORES')
  local freed = 0
  for i = 1, #rows, 2 do
    freed = freed + tonumber(redis.call('HGET', KEYS[2], rows[i]) or '0')
    wait = tonumber(rows[i + 1]) - now
    if freed >= need then break end
  end
  -- A lease still being spent (its grant not yet reported) may come back
  -- partly unused when it ends: poll then (plus a sweep tick and a round
  -- trip) rather than wait for the window.
  local lp = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%d', now + W), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #lp > 0 then
    local back = tonumber(lp[2]) - W - now + math.min(L / 4, 250000) + 10000
    if back < wait then wait = back end
  end
  if wait < 1000 then wait = 1000 end
end
return {lease, N - sum, n, math.floor(wait), lost, restored}
