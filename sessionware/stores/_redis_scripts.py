"""The Lua scripts of :class:`~sessionware._async.stores.redis.RedisStore`: one per store operation.

Each script is one atomic round trip (EVALSHA). A session is one hash at
``KEYS[1]`` (``<prefix>{<key>}``) with the fields::

    d   the committed data (bytes)
    t   fencing token, decimal; starts at the server time in microseconds at
        CREATE and becomes max(t + 1, now_us) at every ACQUIRE, so it grows at
        every acquire and is not reused by a later record with the same key
    l   lease deadline, server time in ms; 0 when unlocked
    e   idle deadline, server time in ms; the key's PEXPIREAT is set to it
    a   absolute deadline, server time in ms; 0 when none (e never passes a)
    w   present when a waiter saw the lock taken: the next COMMIT, RELEASE or
        DELETE publishes a wake-up and clears it (uncontended releases publish
        nothing)
    c   when CREATE wrote the record, server time in ms
    g   when the current lease was granted (ACQUIRE), server time in ms; 0 when
        unlocked (COMMIT and RELEASE clear it with 'l'; RENEW keeps it)

Bookkeeping records (data beginning with a NUL byte: the core's tombstones and
user indexes) also have a marker key, ``KEYS[2]`` = ``<prefix>{<key>}:x``
(same slot), that outlives the record by ``MARK_MARGIN_MS``: CREATE and COMMIT
set it when they write such data, and a slide of the deadline moves it along.
A store watching expiries (``RedisStore.watch_expired``) hears the record's
expiry, runs CLAIM on the marker and reports only when CLAIM set it: a marker
already there means bookkeeping, or another watcher that reported first.
Sessions' data never begins with NUL, so their commits write no marker.

Time is always the server's (``TIME``). Numbers are written with
``string.format('%d', n)``: Lua 5.1's ``tostring`` keeps only 14 digits.
Fenced scripts return 0 when the record is gone or carries another token (RENEW
also when the lease was ended), and leave it untouched.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "CLAIM", "CLAIM_TTL_MS", "COMMIT", "CREATE", "DELETE", "DISCARD",
           "INSPECT", "MARK_MARGIN_MS", "READ", "RELEASE", "RENEW"]

# How long a bookkeeping record's marker outlives the record's deadline: Redis
# deletes an expired key shortly after its deadline (its active expiry cycle),
# and the marker must still be there when the watchers hear of it.
MARK_MARGIN_MS = 60_000
# How long a claim (a marker CLAIM set) lasts: longer than any watcher takes to
# hear one expiry, since the server sends the notification to all at once.
CLAIM_TTL_MS = 60_000

# Shared prelude: server time in ms (now) and in microseconds (now_us).
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function fmt(n) return string.format('%d', n) end
"""

# Shared: mark a bookkeeping record (data beginning with NUL) at KEYS[2] until
# MARK_MARGIN_MS past its deadline 'expires' (ms), so no watcher reports it.
_MARK = f"""
local function mark(data, expires)
  if string.byte(data, 1) == 0 then
    redis.call('SET', KEYS[2], '1', 'PXAT', fmt(expires + {MARK_MARGIN_MS}))
  end
end
"""

# Shared: slide the idle deadline to now + ttl (capped by a) if that moves it by
# at least refresh ms; r_a and r_e are the stored 'a' and 'e' fields. A marker
# at KEYS[2] (a bookkeeping record's) moves along; without one PEXPIREAT is a
# no-op.
_SLIDE = f"""
local function slide(ttl, refresh, r_a, r_e)
  local target = now + tonumber(ttl)
  local absolute = tonumber(r_a)
  if absolute > 0 and absolute < target then target = absolute end
  if target - tonumber(r_e) >= tonumber(refresh) then
    redis.call('HSET', KEYS[1], 'e', fmt(target))
    redis.call('PEXPIREAT', KEYS[1], fmt(target))
    redis.call('PEXPIREAT', KEYS[2], fmt(target + {MARK_MARGIN_MS}))
  end
end
"""

# Shared: publish a wake-up on channel ARGV[n] when a waiter flagged the record.
_WAKE = """
local function wake(flag, channel)
  if flag then
    redis.call('HDEL', KEYS[1], 'w')
    redis.call('PUBLISH', channel, KEYS[1])
  end
end
"""

# ACQUIRE: lock the session and load its data.
#   KEYS[1] the session hash; ARGV[1] lease ttl (ms).
#   Returns nil when absent; {1, token, data} when granted;
#   {0, retry_after_ms} while another lease is live (and flags a waiter).
ACQUIRE = _NOW + """
local r = redis.call('HMGET', KEYS[1], 't', 'l', 'd')
if not r[1] then return nil end
local locked = tonumber(r[2])
if locked > now then
  redis.call('HSET', KEYS[1], 'w', '1')
  return {0, locked - now}
end
local token = math.max(tonumber(r[1]) + 1, now_us)
redis.call('HSET', KEYS[1], 't', fmt(token), 'l', fmt(now + tonumber(ARGV[1])),
           'g', fmt(now))
return {1, token, r[3]}
"""

# COMMIT: write data, set the idle expiry, unlock, wake waiters; mark
# bookkeeping data. Fenced.
#   KEYS[1] the session hash, KEYS[2] its marker; ARGV[1] token, ARGV[2] data,
#   ARGV[3] ttl (ms), ARGV[4] wake-up channel.
#   Returns 1 on success, 0 when the lease is lost.
COMMIT = _NOW + _WAKE + _MARK + """
local r = redis.call('HMGET', KEYS[1], 't', 'a', 'w')
if r[1] ~= ARGV[1] then return 0 end
local expires = now + tonumber(ARGV[3])
local absolute = tonumber(r[2])
if absolute > 0 and absolute < expires then expires = absolute end
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'l', '0', 'g', '0', 'e', fmt(expires))
redis.call('PEXPIREAT', KEYS[1], fmt(expires))
mark(ARGV[2], expires)
wake(r[3], ARGV[4])
return 1
"""

# RELEASE: unlock without writing data, optionally slide the idle expiry,
# wake waiters. Fenced.
#   KEYS[1] the session hash, KEYS[2] its marker; ARGV[1] token, ARGV[2] ttl
#   (ms) or '' for none, ARGV[3] refresh_after (ms), ARGV[4] wake-up channel.
#   Returns 1 on success, 0 when the lease is lost.
RELEASE = _NOW + _SLIDE + _WAKE + """
local r = redis.call('HMGET', KEYS[1], 't', 'a', 'e', 'w')
if r[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'l', '0', 'g', '0')
if ARGV[2] ~= '' then slide(ARGV[2], ARGV[3], r[2], r[3]) end
wake(r[4], ARGV[4])
return 1
"""

# RENEW: extend the lease. Fenced, and only while the lease is held: l = 0
# means COMMIT or RELEASE ended it (they keep the token), and re-locking then
# would lock out the next request for a lease term. A lapsed l (< now) with
# the same token is still held: no newer lease took it.
#   KEYS[1] the session hash; ARGV[1] token, ARGV[2] lease ttl (ms).
#   Returns 1 on success, 0 when the lease is lost or already ended.
RENEW = _NOW + """
local r = redis.call('HMGET', KEYS[1], 't', 'l')
if r[1] ~= ARGV[1] or tonumber(r[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'l', fmt(now + tonumber(ARGV[2])))
return 1
"""

# READ: the last committed data, without the lock; optionally slide the expiry.
#   KEYS[1] the session hash, KEYS[2] its marker; ARGV[1] ttl (ms) or '' for
#   none, ARGV[2] refresh_after (ms).
#   Returns the data, or nil when absent.
READ = _NOW + _SLIDE + """
local r = redis.call('HMGET', KEYS[1], 'd', 'a', 'e')
if not r[1] then return nil end
if ARGV[1] ~= '' then slide(ARGV[1], ARGV[2], r[2], r[3]) end
return r[1]
"""

# CREATE: insert a new, unlocked record unless a live one exists; mark
# bookkeeping data.
#   KEYS[1] the session hash, KEYS[2] its marker; ARGV[1] data, ARGV[2] ttl
#   (ms), ARGV[3] absolute ttl (ms) or '' for none.
#   Returns 1 when created, 0 when the key is taken.
CREATE = _NOW + _MARK + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local absolute = 0
if ARGV[3] ~= '' then absolute = now + tonumber(ARGV[3]) end
local expires = now + tonumber(ARGV[2])
if absolute > 0 and absolute < expires then expires = absolute end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 't', fmt(now_us), 'l', '0',
           'e', fmt(expires), 'a', fmt(absolute), 'c', fmt(now))
redis.call('PEXPIREAT', KEYS[1], fmt(expires))
mark(ARGV[1], expires)
return 1
"""

# DELETE: remove the record and wake waiters. Fenced.
#   KEYS[1] the session hash; ARGV[1] token, ARGV[2] wake-up channel.
#   Returns 1 on success, 0 when the lease is lost.
DELETE = """
local r = redis.call('HMGET', KEYS[1], 't', 'w')
if r[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if r[2] then redis.call('PUBLISH', ARGV[2], KEYS[1]) end
return 1
"""

# DISCARD: remove the record whatever its lock and token, and wake waiters
# (they find the session gone). Not fenced: an operator's revocation. The
# holder's next fenced script finds no 't' and returns 0 (LeaseLost).
#   KEYS[1] the session hash; ARGV[1] wake-up channel.
#   Returns 1 when a record was removed, 0 when there was none.
DISCARD = """
local waiting = redis.call('HGET', KEYS[1], 'w')
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
if waiting then redis.call('PUBLISH', ARGV[1], KEYS[1]) end
return 1
"""

# INSPECT: the record as operators see it, without the lock and without a slide.
#   KEYS[1] the session hash. Returns nil when absent; {data, e, l, c, g}
#   otherwise (in server ms, as stored; l and g are 0 when unlocked).
INSPECT = """
local r = redis.call('HMGET', KEYS[1], 'd', 'e', 'l', 'c', 'g')
if not r[1] then return nil end
return r
"""

# CLAIM: the right to report that the session at KEYS[1] expired, for the one
# watcher that asks first. A watcher runs it on hearing the key's expiry and
# reports only on a 1. The marker then stays CLAIM_TTL_MS, past the moment
# every other watcher hears the same expiry (they get 0).
#   KEYS[1] the expired session's hash (gone; names the slot), KEYS[2] its
#   marker. Returns 1 when claimed, 0 when the marker was there: a bookkeeping
#   record's (CREATE, COMMIT) or another watcher's claim.
CLAIM = f"""
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', '{CLAIM_TTL_MS}') then return 1 end
return 0
"""
