"""The Lua scripts behind the shared state: each runs atomically inside Redis.

Lease times come from Redis' own clock (`TIME`), so gateways whose clocks disagree still agree on
when a lease has expired. Budget windows are named by the gateways' wall clocks (keep them in
NTP sync; a skew of a second only moves which minute a request lands in). Arguments are built
by `shared_plan`; replies are read there too.
"""

from __future__ import annotations

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: lane lease sets (target lane first, n of them), the client's set if it has a cap, and
# last the "someone waits" flag. ARGV: lease id, ttl ms, n, capacity, client cap (-1 none), then
# (cap, reserved) per lane.
# Reply: 1 won, -1 lane full, -2 client full, -3 no free slot (pool or others' reservations).
# A loss raises the flag for WAITING_MS: only then do releases publish "freed" (a loser retries
# at least every FREED_RECHECK_S, which keeps the flag up while anyone waits).
WAITING_MS = 2000
ACQUIRE = (
    _NOW_MS
    + """
local id, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local capacity, client_cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local function lose(code)
  redis.call('SET', KEYS[#KEYS], '1', 'PX', """
    + str(WAITING_MS)
    + """)
  return code
end
local counts, total = {}, 0
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  counts[i] = redis.call('ZCARD', KEYS[i])
  total = total + counts[i]
end
if counts[1] >= tonumber(ARGV[6]) then return lose(-1) end
if client_cap >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[n + 1], '-inf', now)
  if redis.call('ZCARD', KEYS[n + 1]) >= client_cap then return lose(-2) end
end
local free, held = capacity - total, 0
for i = 2, n do
  local unused = tonumber(ARGV[5 + 2 * i]) - counts[i]
  if unused > 0 then held = held + unused end
end
local own = tonumber(ARGV[7]) - counts[1]
if not (free - held >= 1 or (free >= 1 and own > 0)) then return lose(-3) end
redis.call('ZADD', KEYS[1], now + ttl, id)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
if client_cap >= 0 then
  redis.call('ZADD', KEYS[n + 1], now + ttl, id)
  redis.call('PEXPIRE', KEYS[n + 1], ttl * 2)
end
return 1
"""
)

# KEYS: lease sets; ARGV: ttl ms, then the lease id held in KEYS[i] at ARGV[i + 1].
# Upserts: a lease lost while Redis was down (or restarted empty) is counted again.
RENEW = (
    _NOW_MS
    + """
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ttl * 2)
end
return #KEYS
"""
)

# KEYS: the lease's sets, then the "someone waits" flag; ARGV: lease id, freed channel, lane.
# Publishes only while some gateway has a waiter that lost a lease: uncontended, a release is
# one ZREM and no gateway wakes for it.
RELEASE = """
for i = 1, #KEYS - 1 do redis.call('ZREM', KEYS[i], ARGV[1]) end
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
"""

# KEYS: budget window hashes; ARGV: tokens, then (limit, expire-at unix s) per key.
# Reply: {1 reserved | 0 refused, settled_1, reserved_1, settled_2, ...} as read before.
BUDGET_RESERVE = """
local tokens = tonumber(ARGV[1])
local reply, fits = {0}, true
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'settled', 'reserved')
  local settled, reserved = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  reply[2 * i], reply[2 * i + 1] = settled, reserved
  if settled + reserved + tokens > tonumber(ARGV[2 * i]) then fits = false end
end
if not fits then return reply end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'reserved', tokens)
  redis.call('EXPIREAT', KEYS[i], ARGV[2 * i + 1])
end
reply[1] = 1
return reply
"""

# KEYS: the windows reserved in; ARGV: reserved tokens, actual tokens, then expire-at per key.
# A window that Redis lost meanwhile (restart without persistence) must not go below zero
# reserved: that would let later requests overspend it.
BUDGET_SETTLE = """
for i = 1, #KEYS do
  if redis.call('HINCRBY', KEYS[i], 'reserved', -tonumber(ARGV[1])) < 0 then
    redis.call('HSET', KEYS[i], 'reserved', 0)
  end
  redis.call('HINCRBY', KEYS[i], 'settled', tonumber(ARGV[2]))
  redis.call('EXPIREAT', KEYS[i], ARGV[i + 2])
end
return 1
"""

# KEYS[1]: the leader key; ARGV: this gateway's id, ttl ms. Reply 1: this gateway leads.
LEAD = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
