"""A SessionStore on Redis: shared by many replicas, every write one atomic script.

Key layout, all under ``{prefix}:`` (``sid`` is a session id; ``member`` is the
JSON text ``["sid", "effect_id"]``):

- ``session:{sid}`` (hash): ``body`` (the session as JSON), ``version``,
  ``status``, ``created_at``, ``updated_at``;
- ``sessions`` (zset): session ids scored by creation order (``seq:sessions``);
- ``outbox`` (zset): every pending effect's ``member``, scored by a global
  counter (``seq:outbox``), so effects come back in save order;
  ``outbox:{sid}`` (zset): the same, for one session;
  ``effects`` (hash): ``member`` -> the effect as JSON;
- ``audit:{sid}`` (list): the session's audit events as JSON, in chain order;
- ``timers`` (zset): one member per timer, ``"{seq:020d}|" + JSON [sid,
  timer_id, due_at]`` scored by the due time in epoch seconds (the ``seq``
  prefix keeps timers due at the same instant in scheduling order, and the
  ISO ``due_at`` keeps the caller's time zone); ``timer-index`` (hash):
  JSON ``[sid, timer_id]`` -> that member, so a timer can be moved or
  cancelled; ``timers:{sid}`` (zset): the same members and scores, for one
  session; ``seq:timers`` numbers new timers;
- ``seen:{sid}`` (set): the dedupe keys already recorded for a session;
- ``schema`` (string): the version of this key layout, written by the first
  store that opens the prefix; a newer one than this multiverify knows is
  refused.

``create`` and ``save`` are one Lua script each: the compare-and-set on the
version, the session, its effects and its audit events are written together or
not at all, so the compare-and-set holds between every replica sharing the
prefix. The script then publishes the session's id on the session's own
channel, ``{prefix}:changes:{db}:{sid}``; a store subscribes to the channels
of the sessions waited for here, each from its first waiter to its last, on
one Pub/Sub connection (a [`ChangeFeed`][multiverify.stores.ChangeFeed]).
Scripts name every key they touch in ``KEYS``; the store expects one Redis
server (or a primary), not a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import logging
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._audit import AuditEvent
from .._clock import Clock, SystemClock
from .._serde import effect_to_json, loads, session_to_json, structure_effect
from .._session import Effect, Session
from ..exceptions import (
    ConfigurationError,
    StoreUnavailableError,
)
from ._base import (
    LISTEN_AFTER,
    DueTimer,
    EffectClaim,
    OpenableStore,
    PendingEffect,
    QueueItem,
    Quota,
    Quotas,
    QuotaTake,
    Subscribers,
    fit_takes,
    refused_quota,
    refused_take,
    session_exists,
    session_missing,
    version_moved,
    with_sessions,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

    import redis.asyncio
    from redis.asyncio.connection import AbstractConnection

__all__ = ["RedisStore"]

# The version of the key layout below; a change to it that old code cannot
# read bumps it (and brings a migration, ``_MIGRATE``).
SCHEMA_VERSION = 3

# Layout 2 adds claims on pending effects: every outbox ``member`` is in
# ``claims`` (zset), scored by when its claim lapses in epoch microseconds
# (0: never claimed), and ``claim-owner`` (hash) maps a claimed member to its
# owner. Migrating from layout 1 puts every pending effect in ``claims``,
# unclaimed. KEYS: 1 schema, 2 outbox, 3 claims. Returns the layout version.
_MIGRATE = """
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if version == 1 then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    redis.call('ZADD', KEYS[3], 'NX', 0, member)
  end
  version = 2
  redis.call('SET', KEYS[1], version)
elseif version == 0 then
  version = tonumber(ARGV[1])
  redis.call('SET', KEYS[1], version)
end
return version
"""

# Layout 3 adds ``timers:{sid}``, each session's timers, so that one
# session's are read without every timer. Migrating from layout 2 copies
# each member of ``timers`` into its session's set; the caller names those
# sets, since a script names every key it touches. KEYS: 1 schema,
# 2 timers, then ``timers:{sid}`` of each session in ARGV. ARGV: 1 the
# layout migrated to, then the session ids. Returns the ids of the sessions
# with timers the caller did not name (written since it read them; nothing
# is marked migrated then, and the copy already made is harmless to redo).
_MIGRATE_TIMERS = """
if tonumber(redis.call('GET', KEYS[1])) ~= tonumber(ARGV[1]) - 1 then
  return {}
end
local sets = {}
for i = 2, #ARGV do
  sets[ARGV[i]] = KEYS[i + 1]
end
local members = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local missing = {}
for i = 1, #members, 2 do
  local sid = cjson.decode(string.sub(members[i], 22))[1]
  if sets[sid] then
    redis.call('ZADD', sets[sid], members[i + 1], members[i])
  else
    missing[#missing + 1] = sid
  end
end
if #missing == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
end
return missing
"""

# Writes what a create or save writes besides the session; shared by both.
# KEYS: 1 session, 2 sessions, 3 outbox, 4 outbox:{sid}, 5 effects,
#       6 seq:outbox, 7 audit:{sid}, 8 seq:sessions, 9 claims,
#       10 claim-owner, 11 timers, 12 timer-index, 13 seq:timers,
#       14 timers:{sid}
# ARGV from ``first``: the claim's owner ('' for none) and end (µs), the
# count of members completed, those members, the timer-index field of the
# timer fired ('' for none), the count of timers cancelled, their fields,
# the count of timers scheduled, (field, score, JSON) triples, the effect
# count, (member, body) pairs, then audit events.
_WRITE = """
local function unschedule(field)
  local old = redis.call('HGET', KEYS[12], field)
  if old then
    redis.call('ZREM', KEYS[11], old)
    redis.call('ZREM', KEYS[14], old)
    redis.call('HDEL', KEYS[12], field)
  end
end
local function schedule(field, score, timer)
  local old = redis.call('HGET', KEYS[12], field)
  local seq
  if old then
    redis.call('ZREM', KEYS[11], old)
    redis.call('ZREM', KEYS[14], old)
    seq = string.sub(old, 1, 20)
  else
    seq = string.format('%020d', redis.call('INCR', KEYS[13]))
  end
  local member = seq .. '|' .. timer
  redis.call('ZADD', KEYS[11], score, member)
  redis.call('ZADD', KEYS[14], score, member)
  redis.call('HSET', KEYS[12], field, member)
end
local function complete(member)
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZREM', KEYS[4], member)
  redis.call('HDEL', KEYS[5], member)
  redis.call('ZREM', KEYS[9], member)
  redis.call('HDEL', KEYS[10], member)
end
local function write(first)
  local owner, till = ARGV[first], ARGV[first + 1]
  local i = first + 3
  for _ = 1, tonumber(ARGV[first + 2]) do
    complete(ARGV[i])
    i = i + 1
  end
  if ARGV[i] ~= '' then
    unschedule(ARGV[i])
  end
  i = i + 1
  for _ = 1, tonumber(ARGV[i]) do
    unschedule(ARGV[i + 1])
    i = i + 1
  end
  i = i + 1
  for _ = 1, tonumber(ARGV[i]) do
    schedule(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    i = i + 3
  end
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, n do
    local member, body = ARGV[i], ARGV[i + 1]
    if not redis.call('ZSCORE', KEYS[3], member) then
      local seq = redis.call('INCR', KEYS[6])
      redis.call('ZADD', KEYS[3], seq, member)
      redis.call('ZADD', KEYS[4], seq, member)
    end
    redis.call('HSET', KEYS[5], member, body)
    if owner == '' then
      redis.call('ZADD', KEYS[9], 0, member)
      redis.call('HDEL', KEYS[10], member)
    else
      redis.call('ZADD', KEYS[9], till, member)
      redis.call('HSET', KEYS[10], member, owner)
    end
    i = i + 2
  end
  for j = i, #ARGV do
    redis.call('RPUSH', KEYS[7], ARGV[j])
  end
end
"""

# ARGV: 1 sid, 2 body, 3 status, 4 now, 5 the session's channel of changes
# ('' for none), 6 sid,
# 7... effects and audit. Returns 1, or 0 when the session exists (nothing
# written); the session's id is published once it is written.
_CREATE = (
    _WRITE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'body', ARGV[2], 'version', 1, 'status', ARGV[3],
           'created_at', ARGV[4], 'updated_at', ARGV[4])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[8]), ARGV[1])
write(7)
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return 1
"""
)

# ARGV: 1 expected version, 2 body, 3 status, 4 now, 5 the session's
# channel of changes ('' for none), 6 sid, 7... effects and audit. Returns the new version (and
# publishes the session's id); 0 when the session is missing; minus the
# stored version when it is not the expected one (nothing written in either
# case).
_SAVE = (
    _WRITE
    + """
local version = redis.call('HGET', KEYS[1], 'version')
if not version then
  return 0
end
version = tonumber(version)
if version ~= tonumber(ARGV[1]) then
  return -version
end
redis.call('HSET', KEYS[1], 'body', ARGV[2], 'version', version + 1,
           'status', ARGV[3], 'updated_at', ARGV[4])
write(7)
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return version + 1
"""
)

# KEYS: 1 outbox zset (global or one session's), 2 effects, 3 claims,
# 4 claim-owner. Returns (member, body, owner or '', claim end µs) per
# effect, oldest first.
_PENDING = """
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local body = redis.call('HGET', KEYS[2], member)
  if body then
    out[#out + 1] = member
    out[#out + 1] = body
    out[#out + 1] = redis.call('HGET', KEYS[4], member) or ''
    out[#out + 1] = redis.call('ZSCORE', KEYS[3], member) or '0'
  end
end
return out
"""

# KEYS: 1 claims, 2 claim-owner, 3 effects. ARGV: 1 at (µs), 2 claim end
# (µs), 3 owner, 4 limit. Claims the effects whose claim lapsed first (never
# claimed ones before all); returns (member, body) pairs.
_CLAIM_EFFECTS = """
local out = {}
local free = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
for _, member in ipairs(free) do
  local body = redis.call('HGET', KEYS[3], member)
  if body then
    redis.call('ZADD', KEYS[1], ARGV[2], member)
    redis.call('HSET', KEYS[2], member, ARGV[3])
    out[#out + 1] = member
    out[#out + 1] = body
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
"""

# KEYS: 1 claims, 2 claim-owner. ARGV: 1 owner, 2 claim end (µs), 3... members.
# Returns how many claims moved.
_EXTEND_EFFECTS = """
local moved = 0
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[i])
    moved = moved + 1
  end
end
return moved
"""

# KEYS: 1 outbox, 2 outbox:{sid}, 3 effects, 4 claims, 5 claim-owner.
# ARGV: 1 member.
_COMPLETE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
"""

# KEYS: 1 outbox, 2 effects, 3 claims, 4 claim-owner, then outbox:{sid} of
# each effect. ARGV: each effect's member, in the same order.
_COMPLETE_MANY = """
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[4 + i], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
end
"""

# The same timer writes on their own. KEYS: those of _WRITE (the session's),
# of which only 11 timers, 12 timer-index, 13 seq:timers and 14
# timers:{sid} are touched;
# every key is a real one under the prefix, which an ACL may require.
# ARGV: 1 index field, 2 score, 3 JSON [sid, timer_id, due_at].
# A moved timer keeps its sequence number (its place among ties).
_SCHEDULE = _WRITE + "schedule(ARGV[1], ARGV[2], ARGV[3])\n"

# ARGV: 1 index field.
_CANCEL = _WRITE + "unschedule(ARGV[1])\n"

# ARGV: those of _SCHEDULE, then 4 the score the timer must have. Returns 1
# if it moved, else 0.
_MOVE = (
    _WRITE
    + """
local old = redis.call('HGET', KEYS[12], ARGV[1])
if not old or tonumber(redis.call('ZSCORE', KEYS[11], old)) ~= tonumber(ARGV[4]) then
  return 0
end
schedule(ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)

# -- shared state ---------------------------------------------------------------
#
# Times go into scripts as integer microseconds since the epoch (exact in a
# Lua number up to the year 2255). Every key also gets a physical expiry well
# after its logical one (``_GRACE`` later), so what nobody reads again leaves
# memory; the logical expiry, from the caller's ``at``, is what counts.

# KEYS: 1 the window (zset of "seq|amount|at ISO" scored by at), 2 seq:quota.
# ARGV: 1 at, 2 window start, 3 limit, 4 amount, 5 at ISO, 6 keep (ms).
# Returns {1, used} when allowed; {0, used, entries oldest first} when not.
_CONSUME = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local entries = redis.call('ZRANGE', KEYS[1], 0, -1)
local used = 0
for _, entry in ipairs(entries) do
  used = used + tonumber(string.match(entry, '^[^|]*|([^|]*)|'))
end
local amount = tonumber(ARGV[4])
if used + amount <= tonumber(ARGV[3]) then
  local seq = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], ARGV[1], seq .. '|' .. ARGV[4] .. '|' .. ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return {1, string.format('%.17g', used + amount)}
end
return {0, string.format('%.17g', used), entries}
"""

# Several takes, every one or none. KEYS: each take's window (a key taken
# twice is named twice), then seq:quota. ARGV: 1 at, 2 at ISO, then four a
# take from 3: its window start, limit, amount and keep (ms). A key's
# entries older than its widest window go first. Returns {1, what each
# take's window held before} when every take fit and was recorded; {0, the
# first take that did not fit, its key's entries oldest first} otherwise,
# with nothing recorded.
_CONSUME_ALL = """
local n = #KEYS - 1
local at = tonumber(ARGV[1])
local widest = {}
for i = 1, n do
  local start = ARGV[4 * i - 1]
  local known = widest[KEYS[i]]
  if known == nil or tonumber(start) < tonumber(known) then
    widest[KEYS[i]] = start
  end
end
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', widest[KEYS[i]])
end
local held = {}
local batch = {}
for i = 1, n do
  local key = KEYS[i]
  local start = ARGV[4 * i - 1]
  local used = 0
  for _, entry in ipairs(redis.call('ZRANGEBYSCORE', key, '(' .. start, '+inf')) do
    used = used + tonumber(string.match(entry, '^[^|]*|([^|]*)|'))
  end
  held[i] = used
  local total = used
  if at > tonumber(start) then
    total = total + (batch[key] or 0)
  end
  local amount = tonumber(ARGV[4 * i + 1])
  if total + amount > tonumber(ARGV[4 * i]) then
    return {0, i, redis.call('ZRANGE', key, 0, -1)}
  end
  batch[key] = (batch[key] or 0) + amount
end
local keep = {}
for i = 1, n do
  local seq = redis.call('INCR', KEYS[n + 1])
  redis.call('ZADD', KEYS[i], ARGV[1], seq .. '|' .. ARGV[4 * i + 1] .. '|' .. ARGV[2])
  local ms = ARGV[4 * i + 2]
  if keep[KEYS[i]] == nil or tonumber(ms) > tonumber(keep[KEYS[i]]) then
    keep[KEYS[i]] = ms
  end
end
local answer = {1}
for i = 1, n do
  redis.call('PEXPIRE', KEYS[i], keep[KEYS[i]])
  answer[i + 1] = string.format('%.17g', held[i])
end
return answer
"""

# KEYS: 1 the window. ARGV: 1 at, 2 amount. Removes the latest entry of that
# amount recorded at that moment; returns 1 if there was one, else 0.
_REFUND = """
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
for i = #entries, 1, -1 do
  local taken = tonumber(string.match(entries[i], '^[^|]*|([^|]*)|'))
  if taken == tonumber(ARGV[2]) then
    return redis.call('ZREM', KEYS[1], entries[i])
  end
end
return 0
"""

# KEYS: 1 the value (hash: value, expires). ARGV: 1 value, 2 expires,
# 3 the condition ('0' none, '1' only if absent, '2' only if it holds
# ARGV[6] live), 4 at, 5 keep (ms), 6 the value expected. Returns 1 if
# stored, else 0.
_PUT_VALUE = """
if ARGV[3] ~= '0' then
  local found = redis.call('HMGET', KEYS[1], 'value', 'expires')
  local live = found[2] and tonumber(found[2]) > tonumber(ARGV[4])
  if ARGV[3] == '1' and live then
    return 0
  end
  if ARGV[3] == '2' and not (live and found[1] == ARGV[6]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'expires', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: 1 the value. ARGV: nothing, or 1 the value it must hold.
_DELETE_VALUE = """
if #ARGV > 0 and redis.call('HGET', KEYS[1], 'value') ~= ARGV[1] then
  return 0
end
return redis.call('DEL', KEYS[1])
"""

# -- work queues ----------------------------------------------------------------
#
# A queue is two keys: ``queue:{name}`` (hash: item id -> the item as JSON)
# and ``queue-order:{name}`` (zset: the item's ``order`` member,
# "{enqueued µs:020d}|{item id}", scored by minus its priority), so ZRANGE
# lists items in claim order. An item's JSON holds ``body``, ``priority``,
# ``order``, ``enq``/``avail`` (ISO times), ``avail_us``, ``claims``, and
# while claimed ``by``, ``till`` (ISO) and ``till_us``. Every script below has
# KEYS: 1 the hash, 2 the zset.

_ITEM_FREE = """
local function free(item, now)
  return tonumber(item.avail_us) <= now
    and (item.till_us == nil or tonumber(item.till_us) <= now)
end
"""

# ARGV: 1 item id, 2 item JSON, 3 score, 4 order member. Returns 1 if added.
_ENQUEUE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# ARGV: 1 at, 2 owner, 3 claim end, 4 claim end ISO, 5 (optional) item id.
# Returns {item id, item JSON} of the claimed item, or nil.
_CLAIM = (
    _ITEM_FREE
    + """
local now = tonumber(ARGV[1])
local function take(id)
  local raw = redis.call('HGET', KEYS[1], id)
  if not raw then
    return nil
  end
  local item = cjson.decode(raw)
  if not free(item, now) then
    return nil
  end
  item.by = ARGV[2]
  item.till_us = ARGV[3]
  item.till = ARGV[4]
  item.claims = item.claims + 1
  raw = cjson.encode(item)
  redis.call('HSET', KEYS[1], id, raw)
  return {id, raw}
end
if #ARGV >= 5 then
  return take(ARGV[5])
end
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local got = take(string.sub(member, 22))
  if got then
    return got
  end
end
return nil
"""
)

# ARGV: 1 item id, 2 owner, then per script. Each returns 1 if it changed the
# item (whose latest claim is the owner's), else 0.
_OWNED = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local item = cjson.decode(raw)
if item.by ~= ARGV[2] then
  return 0
end
"""

# ARGV: 3 claim end, 4 claim end ISO.
_EXTEND = (
    _OWNED
    + """
item.till_us = ARGV[3]
item.till = ARGV[4]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(item))
return 1
"""
)

# ARGV: 3, 4 (optional) available from (µs, ISO).
_RELEASE = (
    _OWNED
    + """
item.by = nil
item.till = nil
item.till_us = nil
if #ARGV >= 4 then
  item.avail_us = ARGV[3]
  item.avail = ARGV[4]
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(item))
return 1
"""
)

# ARGV: 1 item id, 2 what changes as JSON ({"body": ..., "priority": ...}).
_UPDATE_ITEM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local item = cjson.decode(raw)
local change = cjson.decode(ARGV[2])
if change.body ~= nil then
  item.body = change.body
end
if change.priority ~= nil then
  item.priority = change.priority
  redis.call('ZADD', KEYS[2], -change.priority, item.order)
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(item))
return 1
"""

# ARGV: 1 item id, 2 (optional) owner.
_COMPLETE_ITEM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local item = cjson.decode(raw)
if #ARGV >= 2 and item.by ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], item.order)
return 1
"""

# Returns (item id, item JSON) pairs in claim order.
_QUEUE_ITEMS = """
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local id = string.sub(member, 22)
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    out[#out + 1] = id
    out[#out + 1] = raw
  end
end
return out
"""

_SEQ_WIDTH = 20

log = logging.getLogger("multiverify")

# The subscriber's pauses before subscribing again, in seconds: the first,
# then doubling up to the last (on the store's clock).
_RESUBSCRIBE_FIRST = 0.1
_RESUBSCRIBE_MAX = 10.0

# How long past its logical expiry a shared-state key stays in Redis, in
# seconds (room for clock skew between replicas and the server).
_GRACE = 3600.0


def _micros(at: datetime) -> int:
    """The instant ``at`` names, in whole microseconds since the epoch (naive is UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _keep(seconds: float) -> int:
    """The physical expiry of a key whose logical one is ``seconds`` away, in ms."""
    return max(round((seconds + _GRACE) * 1000), 1)


def _queue_item(queue: str, item_id: bytes | str, raw: bytes | str) -> QueueItem:
    data = json.loads(_text(raw))
    till = data.get("till")
    return QueueItem(
        queue=queue,
        item_id=_text(item_id),
        body=data["body"],
        priority=int(data["priority"]),
        enqueued_at=datetime.fromisoformat(data["enq"]),
        available_at=datetime.fromisoformat(data["avail"]),
        claimed_by=data.get("by"),
        claimed_until=None if till is None else datetime.fromisoformat(till),
        claims=int(data["claims"]),
    )


def _pending(
    member: bytes | str, body: bytes | str, owner: bytes | str, until: float
) -> PendingEffect:
    """A pending effect from its outbox member, body, claim owner and claim end (µs)."""
    sid, _ = json.loads(_text(member))
    return PendingEffect(
        session_id=sid,
        effect=structure_effect(json.loads(_text(body))),
        claimed_by=_text(owner) or None,
        claimed_until=_EPOCH + timedelta(microseconds=until) if until else None,
    )


def _json(*parts: str) -> str:
    return _compact(parts)


# json.dumps(..., separators=(",", ":")) without a new encoder each call: a
# tuple is written as a list, so the text is the same.
_compact = json.JSONEncoder(separators=(",", ":")).encode


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _timer_args(session_id: str, timer_id: str, due_at: datetime) -> list[str | int]:
    """A timer to schedule, as the scripts take it: index field, score, JSON."""
    return [
        _json(session_id, timer_id),
        repr(_score(due_at)),
        _json(session_id, timer_id, due_at.isoformat()),
    ]


def _score(at: datetime) -> float:
    """The instant ``at`` names, in epoch seconds (naive times are read as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def _timer(member: bytes | str) -> DueTimer:
    session_id, timer_id, due_at = json.loads(_text(member)[_SEQ_WIDTH + 1 :])
    return DueTimer(
        session_id=session_id,
        timer_id=timer_id,
        due_at=datetime.fromisoformat(due_at),
    )


def _stop_if_cancelled() -> None:
    """Raise CancelledError if the running task was told to stop.

    redis-py can swallow a cancellation that comes while it connects or
    sends: the listener stops as told instead of waiting on.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# What a script call's keys and arguments may be.
_Arg = str | bytes | int
# A script bound to its store: ``await run(keys=[...], args=[...])``.
_Run: TypeAlias = "Callable[..., Awaitable[Any]]"


class _Script:
    """A Lua script, sent as EVALSHA, or as EVAL when the server lacks it.

    The first two bulk strings of each command are packed once, in RESP
    (https://redis.io/docs/latest/develop/reference/protocol-spec/): a
    bulk string is ``$``, its length, CRLF, the bytes and CRLF.
    """

    __slots__ = ("eval", "evalsha", "sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        body = source.encode()
        # Redis names a script by the SHA-1 of its text (SCRIPT LOAD).
        self.sha = hashlib.sha1(body).hexdigest()  # noqa: S324
        self.evalsha = _bulk(b"EVALSHA") + _bulk(self.sha.encode())
        self.eval = _bulk(b"EVAL") + _bulk(body)


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _packed(
    keys: Sequence[_Arg], args: Sequence[_Arg], encoding: str, errors: str
) -> tuple[bytes, bytes]:
    """The array header and the bulk strings after a script's name: the key count, keys, arguments.

    Text is encoded as the client encodes it; an int is written in decimal,
    as redis-py writes it.
    """
    out = [b"$%d\r\n%d\r\n" % (len(str(len(keys))), len(keys))]
    for arg in (*keys, *args):
        kind = type(arg)
        if kind is str:
            data = cast("str", arg).encode(encoding, errors)
        elif kind is int:
            data = b"%d" % cast("int", arg)
        elif kind is bytes:
            data = cast("bytes", arg)
        else:
            raise TypeError(f"a script argument must be str, bytes or int, not {kind}")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"*%d\r\n" % (len(out) + 2), b"".join(out)


def _checkout_args(pool: Any) -> tuple[str, ...]:
    """What ``pool.get_connection`` takes: a command name before redis-py 5.3, nothing since."""
    try:
        param = inspect.signature(pool.get_connection).parameters.get("command_name")
    except (TypeError, ValueError):  # pragma: no cover - a pool without a signature
        return ()
    if param is not None and param.default is inspect.Parameter.empty:
        return ("EVALSHA",)
    return ()


def _redact(url: str) -> str:
    """``url`` without its password (in the user part or the query)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name, colon, _ = user.partition(":")
        netloc = f"{name}{':***' if colon else ''}@{host}"
    query = urlencode(
        [
            (key, "***" if key.lower() == "password" else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class RedisStore(OpenableStore):
    """Keeps sessions, their outbox, timers and audit trail in one Redis database.

    Several stores (several replicas) on the same server and ``prefix`` share
    everything, and a save's compare-and-set holds between them. Use it as
    ``async with RedisStore(url) as store:``, or just use it (connections are
    opened on first use) and call
    [`aclose`][multiverify.stores.RedisStore.aclose].

    Args:
        url: where Redis is, e.g. ``redis://:password@host:6379/0``
            (``rediss://`` for TLS).
        prefix: the start of every key this store writes; stores with the
            same prefix share their sessions.
        client: a ``redis.asyncio.Redis`` to use instead of one made from
            ``url``; it is left open by ``aclose``. The store's scripts go
            on connections of its pool, under their retry policy, but not
            through the client's ``execute_command`` (redis-py's
            per-command hooks and metrics do not see them), except on a
            client with a single connection.
        clock: stamps ``created_at`` and ``updated_at`` of sessions.
        max_connections: connections the store's pool opens at most; a call
            finding them all busy waits for one (up to ``pool_timeout``
            seconds, then it fails with ``StoreUnavailableError``).
        pool_timeout: how long a call waits for a free connection, in seconds.
        notifications: publish every create and save on the session's
            channel of changes (``{prefix}:changes:{db}:{session id}``), and
            listen there for other replicas' while a Verifier here waits for
            the session (``False``: no publishing, and waiters poll).

    Raises:
        ConfigurationError: redis-py is not installed, the URL cannot be
            used, or (on first use) the server cannot be reached.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "multiverify",
        client: redis.asyncio.Redis | None = None,
        clock: Clock | None = None,
        max_connections: int = 64,
        pool_timeout: float = 20.0,
        notifications: bool = True,
    ) -> None:
        try:
            import redis.asyncio  # noqa: PLC0415 - redis-py is an optional extra
            import redis.exceptions  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigurationError(
                message="RedisStore needs redis-py: install multiverify[redis]"
            ) from exc
        if not prefix:
            raise ConfigurationError(message="RedisStore prefix must not be empty")
        self._url = _redact(url) if client is None else None
        self._prefix = prefix
        self._clock: Clock = SystemClock() if clock is None else clock
        self._owned = client is None
        if client is None:
            try:
                # A blocking pool: at most max_connections, and a call that
                # finds them busy waits instead of failing.
                client = redis.asyncio.Redis.from_pool(
                    redis.asyncio.BlockingConnectionPool.from_url(
                        url, max_connections=max_connections, timeout=pool_timeout
                    )
                )
            except ValueError as exc:
                raise ConfigurationError(
                    message=f"cannot use Redis URL {self._url!r}: {exc}"
                ) from exc
        self._client: redis.asyncio.Redis = client
        # Pub/Sub channels span the server's databases: the channels name the
        # database too, so two databases with the same prefix do not mix.
        db = client.get_connection_kwargs().get("db", 0)  # type: ignore[no-untyped-call]
        self._channels = self._key("changes", str(db), "") if notifications else ""
        self._no_permission: type[Exception] = redis.exceptions.NoPermissionError
        self._refused: type[Exception] = redis.exceptions.ResponseError
        self._changes = Subscribers(listen_after=LISTEN_AFTER)
        self._listener: asyncio.Task[None] | None = None
        self._unreachable: tuple[type[Exception], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        pool = client.connection_pool
        encoder = pool.get_encoder()  # type: ignore[no-untyped-call]
        self._encoding: tuple[str, str] = (encoder.encoding, encoder.encoding_errors)
        self._checkout = _checkout_args(pool)
        self._no_script: type[Exception] = redis.exceptions.NoScriptError
        self._bind_scripts()
        # Those of a write (see _WRITE); the session's own go in on each call.
        self._write_keys_template = [
            "",
            self._key("sessions"),
            self._key("outbox"),
            "",
            self._key("effects"),
            self._key("seq", "outbox"),
            "",
            self._key("seq", "sessions"),
            self._key("claims"),
            self._key("claim-owner"),
            self._key("timers"),
            self._key("timer-index"),
            self._key("seq", "timers"),
            "",
        ]

    def _bind_scripts(self) -> None:
        self._create: _Run = self._script(_CREATE)
        self._save: _Run = self._script(_SAVE)
        self._pending: _Run = self._script(_PENDING)
        self._schedule: _Run = self._script(_SCHEDULE)
        self._cancel: _Run = self._script(_CANCEL)
        self._move: _Run = self._script(_MOVE)
        self._complete: _Run = self._script(_COMPLETE)
        self._complete_many: _Run = self._script(_COMPLETE_MANY)
        self._migrate: _Run = self._script(_MIGRATE)
        self._migrate_timers: _Run = self._script(_MIGRATE_TIMERS)
        self._claim_effects: _Run = self._script(_CLAIM_EFFECTS)
        self._extend_effects: _Run = self._script(_EXTEND_EFFECTS)
        self._consume: _Run = self._script(_CONSUME)
        self._consume_all: _Run = self._script(_CONSUME_ALL)
        self._refund: _Run = self._script(_REFUND)
        self._put_value: _Run = self._script(_PUT_VALUE)
        self._delete_value: _Run = self._script(_DELETE_VALUE)
        self._enqueue: _Run = self._script(_ENQUEUE)
        self._claim: _Run = self._script(_CLAIM)
        self._extend: _Run = self._script(_EXTEND)
        self._release: _Run = self._script(_RELEASE)
        self._update_item: _Run = self._script(_UPDATE_ITEM)
        self._complete_item: _Run = self._script(_COMPLETE_ITEM)
        self._queue_items: _Run = self._script(_QUEUE_ITEMS)

    def _script(self, source: str) -> _Run:
        return functools.partial(self._run, _Script(source))

    async def _run(
        self, script: _Script, keys: Sequence[_Arg], args: Sequence[_Arg] = ()
    ) -> Any:
        """Run ``script`` on a connection of the pool, as redis-py's own scripts run.

        The command is packed here (the script's name once, the rest as
        plain bytes) and sent on a connection taken from the pool, under the
        connection's retry policy: what redis-py's ``execute_command`` does
        for EVALSHA, without its per-command work. A client with a single
        connection of its own runs it through redis-py.
        """
        client = self._client
        if client.single_connection_client:
            return await self._run_on_client(script, keys, args)
        head, body = _packed(keys, args, *self._encoding)
        pool = client.connection_pool
        conn = await pool.get_connection(*self._checkout)  # type: ignore[no-untyped-call]
        try:
            return await conn.retry.call_with_retry(
                lambda: self._send(conn, script, head, body),
                lambda _: conn.disconnect(),
            )
        finally:
            await pool.release(conn)

    async def _send(
        self, conn: AbstractConnection, script: _Script, head: bytes, body: bytes
    ) -> Any:
        await conn.send_packed_command((head, script.evalsha, body))
        try:
            return await conn.read_response()
        except self._no_script:
            # The server lost its scripts (restarted, or SCRIPT FLUSH): EVAL
            # runs this one, and the server keeps it for the next EVALSHA.
            await conn.send_packed_command((head, script.eval, body))
            return await conn.read_response()

    async def _run_on_client(
        self, script: _Script, keys: Sequence[_Arg], args: Sequence[_Arg]
    ) -> Any:
        client = self._client
        try:
            return await client.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", script.sha, len(keys), *keys, *args
            )
        except self._no_script:
            return await client.execute_command(  # type: ignore[no-untyped-call]
                "EVAL", script.source, len(keys), *keys, *args
            )

    def __repr__(self) -> str:
        where = f"url={self._url!r}" if self._url is not None else "client=<given>"
        return f"<multiverify.stores.RedisStore({where}, prefix={self._prefix!r})>"

    async def open(self) -> None:
        """Check that the server answers and that the key layout is one this store knows.

        Raises:
            StoreUnavailableError: the server cannot be reached.
            ConfigurationError: the prefix was written by a newer multiverify.
        """
        await self.schema_version()

    async def schema_version(self) -> int:
        """Bring the prefix's key layout up to date (recording it if absent), and return its version.

        Raises:
            StoreUnavailableError: the server cannot be reached.
            ConfigurationError: the prefix was written by a newer multiverify.
        """
        with self._errors():
            stored = await self._migrate(
                keys=[self._key("schema"), self._key("outbox"), self._key("claims")],
                args=[SCHEMA_VERSION],
            )
            version = int(cast("int", stored))
            if version == SCHEMA_VERSION - 1:
                await self._index_timers()
                version = SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                message=f"Redis prefix {self._prefix!r} holds key layout version "
                f"{version}, newer than this multiverify understands "
                f"({SCHEMA_VERSION}); upgrade multiverify"
            )
        return version

    async def _index_timers(self) -> None:
        """Migrate layout 2 to 3: copy every timer into its session's sorted set."""
        sessions = {timer.session_id for timer in await self.timers()}
        while True:
            missing = await self._migrate_timers(
                keys=[
                    self._key("schema"),
                    self._key("timers"),
                    *(self._key("timers", sid) for sid in sessions),
                ],
                args=[SCHEMA_VERSION, *sessions],
            )
            if not missing:
                return
            sessions.update(_text(sid) for sid in missing)

    async def aclose(self) -> None:
        """Close the connections of a client this store made (idempotent).

        A client given to the constructor is left open for its owner. The
        subscriber stops and gives its connection back; a waiter still
        subscribed polls from then on.
        """
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        if self._owned:
            await self._client.aclose()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn "cannot reach the server" into an SDK error."""
        try:
            yield
        except self._unreachable as exc:
            where = self._url if self._url is not None else "the given client"
            raise StoreUnavailableError(
                message=f"cannot reach Redis at {where}: {exc}", store="redis"
            ) from exc
        except self._refused as exc:
            # A key refused is a NOPERM error; a publish refused inside a
            # script is a plain error that says who was refused (Redis 7).
            if not isinstance(exc, self._no_permission) and (
                "user executing the script" not in str(exc)
            ):
                raise
            raise ConfigurationError(
                message=f"Redis refused the store's user ({exc}): it needs the "
                f"keys {self._prefix}:* and, with notifications, the channels "
                f"{self._channels or self._key('changes', '')}{{session id}} "
                f"(ACL rules ~{self._prefix}:* &{self._prefix}:changes:*)"
            ) from exc

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _write_keys(self, session_id: str) -> list[str]:
        keys = self._write_keys_template.copy()
        keys[0] = self._key("session", session_id)
        keys[3] = self._key("outbox", session_id)
        keys[6] = self._key("audit", session_id)
        keys[13] = self._key("timers", session_id)
        return keys

    def _write_args(
        self,
        session: Session,
        head: str | int,
        effects: Sequence[Effect],
        audit: Sequence[AuditEvent],
        *,
        claim: EffectClaim | None,
        completed: Sequence[str] = (),
        fired_timer: str | None = None,
        timers: Sequence[tuple[str, datetime]] = (),
        cancelled_timers: Sequence[str] = (),
    ) -> list[str | int]:
        sid = session.session_id
        args: list[str | int] = [
            head,
            session_to_json(session),
            session.status.value,
            self._clock.now().isoformat(),
            self._channel(sid),
            sid,
            "" if claim is None else claim.owner,
            0 if claim is None else _micros(claim.until),
            len(completed),
            *(_json(sid, effect_id) for effect_id in completed),
            "" if fired_timer is None else _json(sid, fired_timer),
            len(cancelled_timers),
            *(_json(sid, timer_id) for timer_id in cancelled_timers),
            len(timers),
        ]
        for timer_id, due_at in timers:
            args += _timer_args(sid, timer_id, due_at)
        args.append(len(effects))
        for effect in effects:
            args += [_json(sid, effect.effect_id), effect_to_json(effect)]
        args += [event.to_json() for event in audit]
        return args

    # --- ChangeFeed -------------------------------------------------------------

    @property
    def notifies_every_writer(self) -> bool:
        """Whether every replica's create and save publishes the session's id (notifications on)."""
        return bool(self._channels)

    def subscribe(
        self, session_id: str, on_change: Callable[[], None], /
    ) -> Callable[[], None]:
        """Call ``on_change()`` when any replica creates or saves the session.

        The first subscription starts the subscriber: a Pub/Sub connection
        subscribed to the channel of every session subscribed to, from 20 ms
        after its first subscriber (a wait that ends sooner costs the server
        nothing) until its last leaves, which subscribes again when it is
        lost. Once Redis confirms a session's subscription (first, or again
        after a reconnect) it tells the session's subscribers, since a
        change saved before then was published to nobody here.
        """
        cancel = self._changes.add(session_id, on_change)
        if self._channels and self._listener is None:
            self._listener = asyncio.ensure_future(self._listen())
        return cancel

    def _channel(self, session_id: str) -> str:
        """The session's channel of changes ('' without notifications)."""
        return self._channels and self._channels + session_id

    async def _listen(self) -> None:
        """Stay subscribed to the sessions' channels for as long as the store is open."""
        pause = _RESUBSCRIBE_FIRST

        confirming: set[asyncio.Task[None]] = set()

        def confirmed(channel: str) -> None:
            nonlocal pause
            pause = _RESUBSCRIBE_FIRST
            # What changed before the subscription took effect shows in the
            # version, read now that it has.
            task = asyncio.ensure_future(
                self._confirm(channel.removeprefix(self._channels))
            )
            confirming.add(task)
            task.add_done_callback(confirming.discard)

        while True:
            pubsub = self._client.pubsub()
            reader: asyncio.Task[None] | None = None
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]
                _stop_if_cancelled()
                reader = asyncio.ensure_future(self._read(pubsub, confirmed))
                await self._follow(pubsub, reader)
            except self._unreachable as exc:
                log.warning(
                    "lost the Redis connection listening for changes (%s); "
                    "polling, and subscribing again in %.1fs",
                    exc,
                    pause,
                )
            except Exception:
                # Refused (an ACL without the channels) or a fault of its
                # own: waiters poll meanwhile, and the listener tries again.
                log.exception(
                    "listening for changes on Redis failed; polling, and "
                    "subscribing again in %.1fs",
                    pause,
                )
            finally:
                if reader is not None:
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
                for task in list(confirming):
                    task.cancel()
                await asyncio.gather(*confirming, return_exceptions=True)
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await self._clock.sleep(pause)
            pause = min(pause * 2, _RESUBSCRIBE_MAX)

    async def _follow(self, pubsub: Any, reader: asyncio.Task[None]) -> None:
        """Subscribe to the sessions subscribed to, and to no other, until ``reader`` fails.

        What changed while a command was on its way goes in the next one: a
        subscription that ends before the listener sends it costs nothing.
        """
        subscribed: set[str] = set()
        while True:
            started, ended = self._changes.difference(subscribed)
            if started:
                await pubsub.subscribe(*map(self._channel, started))
                _stop_if_cancelled()
            if ended:
                await pubsub.unsubscribe(*map(self._channel, ended))
                _stop_if_cancelled()
            subscribed = (subscribed | started) - ended
            moved = asyncio.ensure_future(self._changes.moved())
            try:
                await asyncio.wait({reader, moved}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                moved.cancel()
            if reader.done():
                return reader.result()  # its error: it reads until one

    async def _confirm(self, session_id: str) -> None:
        """Tell the session's subscribers it is listened for, and its stored version (unknown if unreadable)."""
        try:
            version = await self._client.hget(
                self._key("session", session_id), "version"
            )
        except Exception:  # noqa: BLE001 - told then as after a reconnect: they load it
            version = None
        self._changes.confirmed({session_id: None if version is None else int(version)})

    async def _read(self, pubsub: Any, confirmed: Callable[[str], None]) -> None:
        """Hand every message to the sessions' subscribers, and every subscription's confirmation to ``confirmed``."""
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:  # pragma: no cover - only without a timeout
                continue
            if message["type"] == "subscribe":
                confirmed(_text(message["channel"]))
            elif message["type"] == "message":
                self._changes.notify(_text(message["data"]))

    # --- SessionStore ---------------------------------------------------------

    async def create(
        self,
        session: Session,
        *,
        effects: Sequence[Effect] = (),
        audit: Sequence[AuditEvent] = (),
        claim: EffectClaim | None = None,
        timers: Sequence[tuple[str, datetime]] = (),
    ) -> int:
        session_id = session.session_id
        args = self._write_args(
            session, session_id, effects, audit, claim=claim, timers=timers
        )
        with self._errors():
            created = await self._create(keys=self._write_keys(session_id), args=args)
        if not created:
            raise session_exists(session_id)
        return 1

    async def load(self, session_id: str, /) -> tuple[Session, int]:
        with self._errors():
            body, version = await self._client.hmget(
                self._key("session", session_id), ["body", "version"]
            )
        if body is None or version is None:
            raise session_missing(session_id)
        return loads(_text(body), Session), int(version)

    async def save(
        self,
        session: Session,
        *,
        expected_version: int,
        effects: Sequence[Effect] = (),
        audit: Sequence[AuditEvent] = (),
        claim: EffectClaim | None = None,
        completed: Sequence[str] = (),
        fired_timer: str | None = None,
        timers: Sequence[tuple[str, datetime]] = (),
        cancelled_timers: Sequence[str] = (),
    ) -> int:
        session_id = session.session_id
        args = self._write_args(
            session,
            expected_version,
            effects,
            audit,
            claim=claim,
            completed=completed,
            fired_timer=fired_timer,
            timers=timers,
            cancelled_timers=cancelled_timers,
        )
        with self._errors():
            result = int(await self._save(keys=self._write_keys(session_id), args=args))
        if result == 0:
            raise session_missing(session_id)
        if result < 0:
            raise version_moved(session_id, -result, expected_version)
        return result

    async def pending_effects(
        self, session_id: str | None = None, /
    ) -> list[PendingEffect]:
        outbox = (
            self._key("outbox")
            if session_id is None
            else self._key("outbox", session_id)
        )
        keys = [outbox, self._key("effects"), *self._claim_keys()]
        with self._errors():
            flat = cast("list[bytes | str]", await self._pending(keys=keys))
        return [
            _pending(member, body, owner, float(until))
            for member, body, owner, until in zip(
                flat[::4], flat[1::4], flat[2::4], flat[3::4], strict=True
            )
        ]

    def _claim_keys(self) -> list[str]:
        return [self._key("claims"), self._key("claim-owner")]

    async def claim_effects(
        self, owner: str, /, *, at: datetime, until: datetime, limit: int = 100
    ) -> list[PendingEffect]:
        if limit <= 0:
            return []
        till = _micros(until)
        with self._errors():
            flat = cast(
                "list[bytes | str]",
                await self._claim_effects(
                    keys=[*self._claim_keys(), self._key("effects")],
                    args=[_micros(at), till, owner, limit],
                ),
            )
        claimed = [
            _pending(member, body, owner, till)
            for member, body in zip(flat[::2], flat[1::2], strict=True)
        ]
        # The sessions, in one round trip (the script cannot name their keys
        # before it knows which effects it claims).
        ids = sorted({pending.session_id for pending in claimed})
        if not ids:
            return claimed
        with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for session_id in ids:
                    _ = pipe.hmget(
                        self._key("session", session_id), ["body", "version"]
                    )
                found: list[list[Any]] = await pipe.execute()
        return with_sessions(
            claimed,
            {
                session_id: (body, int(version))
                for session_id, (body, version) in zip(ids, found, strict=True)
                if body is not None and version is not None
            },
        )

    async def extend_effect_claims(
        self, owner: str, effects: Sequence[tuple[str, str]], /, *, until: datetime
    ) -> int:
        if not effects:
            return 0
        with self._errors():
            moved = await self._extend_effects(
                keys=self._claim_keys(),
                args=[owner, _micros(until), *(_json(*key) for key in effects)],
            )
        return int(cast("int", moved))

    async def complete_effect(self, session_id: str, effect_id: str, /) -> None:
        member = _json(session_id, effect_id)
        with self._errors():
            await self._complete(
                keys=[
                    self._key("outbox"),
                    self._key("outbox", session_id),
                    self._key("effects"),
                    *self._claim_keys(),
                ],
                args=[member],
            )

    async def complete_effects(self, effects: Sequence[tuple[str, str]], /) -> None:
        if not effects:
            return
        with self._errors():
            await self._complete_many(
                keys=[
                    self._key("outbox"),
                    self._key("effects"),
                    *self._claim_keys(),
                    *(self._key("outbox", session_id) for session_id, _ in effects),
                ],
                args=[_json(*key) for key in effects],
            )

    async def schedule_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /
    ) -> None:
        with self._errors():
            await self._schedule(
                keys=self._write_keys(session_id),
                args=_timer_args(session_id, timer_id, due_at),
            )

    async def cancel_timer(self, session_id: str, timer_id: str, /) -> None:
        with self._errors():
            await self._cancel(
                keys=self._write_keys(session_id), args=[_json(session_id, timer_id)]
            )

    async def move_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /, *, expected: datetime
    ) -> bool:
        with self._errors():
            moved = await self._move(
                keys=self._write_keys(session_id),
                args=[
                    *_timer_args(session_id, timer_id, due_at),
                    repr(_score(expected)),
                ],
            )
        return bool(moved)

    async def due_timers(self, now: datetime, /, *, limit: int = 100) -> list[DueTimer]:
        if limit <= 0:
            return []
        with self._errors():
            members = cast(
                "list[bytes | str]",
                await self._client.zrangebyscore(
                    self._key("timers"), "-inf", repr(_score(now)), start=0, num=limit
                ),
            )
        return [_timer(member) for member in members]

    async def timers(self, session_id: str | None = None, /) -> list[DueTimer]:
        key = (
            self._key("timers")
            if session_id is None
            else self._key("timers", session_id)
        )
        with self._errors():
            members = cast("list[bytes | str]", await self._client.zrange(key, 0, -1))
        return [_timer(member) for member in members]

    async def record_event_once(self, session_id: str, dedupe_key: str, /) -> bool:
        with self._errors():
            added = await self._client.sadd(self._key("seen", session_id), dedupe_key)
        return bool(added)

    async def forget_event(self, session_id: str, dedupe_key: str, /) -> None:
        with self._errors():
            await self._client.srem(self._key("seen", session_id), dedupe_key)

    async def audit_events(self, session_id: str | None = None, /) -> list[AuditEvent]:
        ids = [session_id] if session_id is not None else await self.session_ids()
        if not ids:
            return []
        with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for sid in ids:
                    _ = pipe.lrange(self._key("audit", sid), 0, -1)
                trails: list[list[Any]] = await pipe.execute()
        return [AuditEvent.from_json(_text(body)) for trail in trails for body in trail]

    async def session_ids(self) -> list[str]:
        with self._errors():
            members = cast(
                "list[bytes | str]",
                await self._client.zrange(self._key("sessions"), 0, -1),
            )
        return [_text(member) for member in members]

    # --- SharedState ----------------------------------------------------------

    async def consume(
        self,
        key: str,
        /,
        *,
        at: datetime,
        window: float,
        limit: float,
        amount: float = 1.0,
    ) -> Quota:
        start = at - timedelta(seconds=window)
        with self._errors():
            answer = cast(
                "list[Any]",
                await self._consume(
                    keys=[self._key("quota", key), self._key("seq", "quota")],
                    args=[
                        _micros(at),
                        _micros(start),
                        repr(float(limit)),
                        repr(float(amount)),
                        at.isoformat(),
                        _keep(window),
                    ],
                ),
            )
        used = float(_text(answer[1]))
        if int(answer[0]):
            return Quota(allowed=True, used=used, limit=limit)
        entries = []
        for entry in answer[2]:
            _, taken, when = _text(entry).split("|", 2)
            entries.append((datetime.fromisoformat(when), float(taken)))
        return refused_quota(used, entries, window=window, limit=limit, amount=amount)

    async def consume_all(
        self, takes: Sequence[QuotaTake], /, *, at: datetime
    ) -> Quotas:
        takes = list(takes)
        if not takes:
            return Quotas()
        args: list[str | int] = [_micros(at), at.isoformat()]
        for take in takes:
            args += [
                _micros(at - timedelta(seconds=take.window)),
                repr(float(take.limit)),
                repr(float(take.amount)),
                _keep(take.window),
            ]
        with self._errors():
            answer = cast(
                "list[Any]",
                await self._consume_all(
                    keys=[
                        *(self._key("quota", take.key) for take in takes),
                        self._key("seq", "quota"),
                    ],
                    args=args,
                ),
            )
        if int(answer[0]):
            quotas, _ = fit_takes(takes, [float(_text(used)) for used in answer[1:]])
            return Quotas(quotas=quotas)
        entries = []
        for entry in answer[2]:
            _, taken, when = _text(entry).split("|", 2)
            entries.append((datetime.fromisoformat(when), float(taken)))
        return refused_take(takes, int(answer[1]) - 1, entries, at=at)

    async def refund(self, key: str, /, *, at: datetime, amount: float = 1.0) -> bool:
        with self._errors():
            removed = await self._refund(
                keys=[self._key("quota", key)],
                args=[_micros(at), repr(float(amount))],
            )
        return bool(removed)

    async def get_value(self, key: str, /, *, at: datetime) -> str | None:
        with self._errors():
            value, expires = await self._client.hmget(
                self._key("value", key), ["value", "expires"]
            )
        if value is None or expires is None or int(expires) <= _micros(at):
            return None
        return _text(value)

    async def put_value(
        self,
        key: str,
        value: str,
        /,
        *,
        at: datetime,
        ttl: float,
        only_if_absent: bool = False,
    ) -> bool:
        return await self._store_value(
            key, value, "1" if only_if_absent else "0", at=at, ttl=ttl
        )

    async def replace_value(
        self, key: str, value: str, /, *, expected: str, at: datetime, ttl: float
    ) -> bool:
        return await self._store_value(key, value, "2", expected, at=at, ttl=ttl)

    async def _store_value(
        self,
        key: str,
        value: str,
        condition: str,
        expected: str = "",
        *,
        at: datetime,
        ttl: float,
    ) -> bool:
        with self._errors():
            stored = await self._put_value(
                keys=[self._key("value", key)],
                args=[
                    value,
                    _micros(at + timedelta(seconds=ttl)),
                    condition,
                    _micros(at),
                    _keep(ttl),
                    expected,
                ],
            )
        return bool(stored)

    async def delete_value(self, key: str, /, *, value: str | None = None) -> bool:
        with self._errors():
            deleted = await self._delete_value(
                keys=[self._key("value", key)],
                args=[] if value is None else [value],
            )
        return bool(deleted)

    async def sweep_expired(self, /, *, at: datetime, batch: int = 1000) -> int:
        del at, batch  # each value and quota window key expires: Redis drops it
        return 0

    # --- WorkQueue ------------------------------------------------------------

    def _queue_keys(self, queue: str) -> list[str]:
        return [self._key("queue", queue), self._key("queue-order", queue)]

    async def enqueue(
        self,
        queue: str,
        item_id: str,
        body: str,
        /,
        *,
        at: datetime,
        priority: int = 0,
        available_at: datetime | None = None,
    ) -> bool:
        available = at if available_at is None else available_at
        order = f"{_micros(at):0{_SEQ_WIDTH}d}|{item_id}"
        item = {
            "body": body,
            "priority": priority,
            "order": order,
            "enq": at.isoformat(),
            "avail": available.isoformat(),
            "avail_us": str(_micros(available)),
            "claims": 0,
        }
        with self._errors():
            added = await self._enqueue(
                keys=self._queue_keys(queue),
                args=[item_id, json.dumps(item), -priority, order],
            )
        return bool(added)

    async def claim(
        self,
        queue: str,
        /,
        *,
        owner: str,
        at: datetime,
        lease: float,
        item_id: str | None = None,
    ) -> QueueItem | None:
        until = at + timedelta(seconds=lease)
        args: list[str | int] = [_micros(at), owner, _micros(until), until.isoformat()]
        if item_id is not None:
            args.append(item_id)
        with self._errors():
            got = await self._claim(keys=self._queue_keys(queue), args=args)
        if got is None:
            return None
        claimed_id, raw = got
        return _queue_item(queue, claimed_id, raw)

    async def extend(
        self, queue: str, item_id: str, /, *, owner: str, at: datetime, lease: float
    ) -> bool:
        until = at + timedelta(seconds=lease)
        with self._errors():
            changed = await self._extend(
                keys=self._queue_keys(queue),
                args=[item_id, owner, str(_micros(until)), until.isoformat()],
            )
        return bool(changed)

    async def release(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        owner: str,
        available_at: datetime | None = None,
    ) -> bool:
        args = [item_id, owner]
        if available_at is not None:
            args += [str(_micros(available_at)), available_at.isoformat()]
        with self._errors():
            changed = await self._release(keys=self._queue_keys(queue), args=args)
        return bool(changed)

    async def update_item(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        body: str | None = None,
        priority: int | None = None,
    ) -> bool:
        change: dict[str, str | int] = {}
        if body is not None:
            change["body"] = body
        if priority is not None:
            change["priority"] = priority
        with self._errors():
            changed = await self._update_item(
                keys=self._queue_keys(queue), args=[item_id, json.dumps(change)]
            )
        return bool(changed)

    async def complete(
        self, queue: str, item_id: str, /, *, owner: str | None = None
    ) -> bool:
        args = [item_id] if owner is None else [item_id, owner]
        with self._errors():
            deleted = await self._complete_item(keys=self._queue_keys(queue), args=args)
        return bool(deleted)

    async def queue_items(self, queue: str, /) -> list[QueueItem]:
        with self._errors():
            flat = cast(
                "list[bytes | str]",
                await self._queue_items(keys=self._queue_keys(queue)),
            )
        return [
            _queue_item(queue, item_id, raw)
            for item_id, raw in zip(flat[::2], flat[1::2], strict=True)
        ]
