"""Circuit breaker state machine, twice: a Lua script over one Redis hash, and a process-local copy.

Both implement the same transitions; tests run the same scenarios against each.

Hash fields: state (closed | open | half_open), gen (bumped on every transition so results of calls
started under an earlier state are ignored), opened (ms), half (ms half-open began), trials (trial
permits handed out), ok (successful trials), cf (consecutive failures), and a ring of ``buckets``
time slots t<i>/c<i>/f<i> (slot epoch, calls, failures) for the failure rate over the window.
Times come from the Redis server clock, so processes with skewed clocks agree.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from apps.core.resilience.redis_state import LuaScript

BUCKETS = 10


@dataclass(frozen=True)
class Thresholds:
    """The numbers a state machine needs (BreakerPolicy's, in milliseconds)."""

    failure_threshold: int
    failure_rate_percent: int
    minimum_calls: int
    window_ms: int
    open_ms: int
    half_open_calls: int

    @property
    def ttl_ms(self) -> int:
        # An idle breaker's hash expires; long enough never to cut an open period or a window short.
        return max(self.window_ms, 2 * self.open_ms) + 60_000

    def as_args(self) -> list[int]:
        return [self.failure_threshold, self.failure_rate_percent, self.minimum_calls, self.window_ms,
                self.open_ms, self.half_open_calls, self.ttl_ms]


@dataclass(frozen=True)
class Decision:
    """The answer to "may I call?": the state seen, the permit's generation, any transition made."""

    allowed: bool
    state: str
    generation: int
    retry_after_ms: int
    changed: str  # "" or "<from>><to>"


_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
local fail_threshold, rate, min_calls, window_ms, open_ms, half_calls, ttl =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local function ms(v) return string.format('%.0f', v) end
local function open(gen)
  redis.call('DEL', key)
  redis.call('HSET', key, 'state', 'open', 'gen', gen + 1, 'opened', ms(now))
  redis.call('PEXPIRE', key, ttl)
end
"""

ALLOW = LuaScript(_PRELUDE + """
local s = redis.call('HMGET', key, 'state', 'gen', 'opened', 'half', 'trials')
local state = s[1] or 'closed'
local gen = tonumber(s[2]) or 0
if state == 'closed' then return {1, state, gen, 0, ''} end
local changed = ''
local half, trials = tonumber(s[4]), tonumber(s[5]) or 0
if state == 'open' then
  local reopen_at = tonumber(s[3]) + open_ms
  if now < reopen_at then return {0, state, gen, reopen_at - now, ''} end
  gen = gen + 1
  half, trials, state, changed = now, 0, 'half_open', 'open>half_open'
  redis.call('HSET', key, 'state', state, 'gen', gen, 'half', ms(now), 'trials', 0, 'ok', 0)
  redis.call('PEXPIRE', key, ttl)
end
if trials >= half_calls then
  -- Trial holders that never reported (killed mid-call) must not wedge the breaker half-open.
  if now - half < open_ms then return {0, state, gen, half + open_ms - now, changed} end
  trials = 0
  redis.call('HSET', key, 'half', ms(now), 'ok', 0)
end
redis.call('HSET', key, 'trials', trials + 1)
return {1, state, gen, 0, changed}
""")

RECORD = LuaScript(_PRELUDE + """
local ok_call = ARGV[8] == 'ok'
local call_gen = tonumber(ARGV[9])
local s = redis.call('HMGET', key, 'state', 'gen', 'ok')
local state = s[1] or 'closed'
local gen = tonumber(s[2]) or 0
-- A result from a call permitted under an earlier state says nothing about this one (-1: unknown).
if state == 'open' or (call_gen ~= gen and not (call_gen == -1 and state == 'closed')) then
  return {state, ''}
end
if state == 'half_open' then
  if not ok_call then open(gen) return {'open', 'half_open>open'} end
  local oks = (tonumber(s[3]) or 0) + 1
  if oks >= half_calls then
    redis.call('DEL', key)
    redis.call('HSET', key, 'state', 'closed', 'gen', gen + 1)
    redis.call('PEXPIRE', key, ttl)
    return {'closed', 'half_open>closed'}
  end
  redis.call('HSET', key, 'ok', oks)
  return {state, ''}
end
local slot_ms = window_ms / 10
local epoch = math.floor(now / slot_ms)
local i = epoch % 10
if tonumber(redis.call('HGET', key, 't' .. i)) ~= epoch then
  redis.call('HSET', key, 't' .. i, epoch, 'c' .. i, 0, 'f' .. i, 0)
end
redis.call('HINCRBY', key, 'c' .. i, 1)
redis.call('PEXPIRE', key, ttl)
if ok_call then
  redis.call('HSET', key, 'cf', 0)
  return {state, ''}
end
redis.call('HINCRBY', key, 'f' .. i, 1)
if redis.call('HINCRBY', key, 'cf', 1) >= fail_threshold then open(gen) return {'open', 'closed>open'} end
local calls, failures = 0, 0
for j = 0, 9 do
  local r = redis.call('HMGET', key, 't' .. j, 'c' .. j, 'f' .. j)
  if r[1] and tonumber(r[1]) > epoch - 10 then
    calls = calls + tonumber(r[2])
    failures = failures + tonumber(r[3])
  end
end
if calls >= min_calls and failures * 100 >= rate * calls then open(gen) return {'open', 'closed>open'} end
return {state, ''}
""")

PEEK = LuaScript(_PRELUDE + """
local s = redis.call('HMGET', key, 'state', 'opened')
local state = s[1] or 'closed'
if state == 'open' then
  local left = tonumber(s[2]) + open_ms - now
  if left <= 0 then return {'half_open', 0} end
  return {state, left}
end
return {state, 0}
""")


class LocalBreakerState:
    """The same state machine for one process, used when Redis is unreachable.

    Breaker names can come from user-supplied hosts (webhooks), so at most ``max_breakers`` are kept:
    the least recently used one is forgotten first, which keeps the state of every active breaker.
    """

    def __init__(self, max_breakers: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._breakers: OrderedDict[str, dict] = OrderedDict()
        self.max_breakers = max_breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def _touch(self, name: str) -> dict:
        # Called with the lock held: the breaker named ``name``, now the most recently used.
        b = self._breakers.get(name)
        if b is None:
            b = self._breakers[name] = _fresh(0)
            while len(self._breakers) > self.max_breakers:
                self._breakers.popitem(last=False)
        else:
            self._breakers.move_to_end(name)
        return b

    def allow(self, name: str, limits: Thresholds) -> Decision:
        now = _now_ms()
        with self._lock:
            b = self._touch(name)
            if b["state"] == "closed":
                return Decision(True, "closed", b["gen"], 0, "")
            changed = ""
            if b["state"] == "open":
                reopen_at = b["opened"] + limits.open_ms
                if now < reopen_at:
                    return Decision(False, "open", b["gen"], reopen_at - now, "")
                b.update(state="half_open", gen=b["gen"] + 1, half=now, trials=0, ok=0)
                changed = "open>half_open"
            if b["trials"] >= limits.half_open_calls:
                if now - b["half"] < limits.open_ms:
                    return Decision(False, "half_open", b["gen"], b["half"] + limits.open_ms - now, changed)
                b.update(trials=0, half=now, ok=0)
            b["trials"] += 1
            return Decision(True, "half_open", b["gen"], 0, changed)

    def record(self, name: str, limits: Thresholds, *, ok: bool, generation: int) -> tuple[str, str]:
        now = _now_ms()
        with self._lock:
            b = self._touch(name)
            state = b["state"]
            if state == "open" or (generation != b["gen"] and not (generation == -1 and state == "closed")):
                return state, ""
            if state == "half_open":
                if not ok:
                    self._breakers[name] = _opened(b["gen"], now)
                    return "open", "half_open>open"
                b["ok"] += 1
                if b["ok"] >= limits.half_open_calls:
                    self._breakers[name] = _fresh(b["gen"] + 1)
                    return "closed", "half_open>closed"
                return state, ""
            epoch = math.floor(now / (limits.window_ms / BUCKETS))
            slot = b["ring"].setdefault(epoch % BUCKETS, [epoch, 0, 0])
            if slot[0] != epoch:
                slot[:] = [epoch, 0, 0]
            slot[1] += 1
            if ok:
                b["cf"] = 0
                return state, ""
            slot[2] += 1
            b["cf"] += 1
            calls = sum(s[1] for s in b["ring"].values() if s[0] > epoch - BUCKETS)
            failures = sum(s[2] for s in b["ring"].values() if s[0] > epoch - BUCKETS)
            if b["cf"] >= limits.failure_threshold or (
                calls >= limits.minimum_calls and failures * 100 >= limits.failure_rate_percent * calls
            ):
                self._breakers[name] = _opened(b["gen"], now)
                return "open", "closed>open"
            return state, ""

    def peek(self, name: str, limits: Thresholds) -> tuple[str, int]:
        with self._lock:
            b = self._breakers.get(name) or _fresh(0)
            if b["state"] == "open":
                left = b["opened"] + limits.open_ms - _now_ms()
                return ("half_open", 0) if left <= 0 else ("open", left)
            return b["state"], 0


def _fresh(gen: int) -> dict:
    return {"state": "closed", "gen": gen, "cf": 0, "ring": {}, "trials": 0, "ok": 0, "half": 0, "opened": 0}


def _opened(gen: int, now: int) -> dict:
    return {**_fresh(gen + 1), "state": "open", "opened": now}


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def parse_decision(reply: list) -> Decision:
    """Turn the ALLOW script's reply into a Decision."""
    allowed, state, generation, retry_after_ms, changed = reply
    return Decision(bool(allowed), _text(state), int(generation), int(retry_after_ms), _text(changed))


def parse_record(reply: list) -> tuple[str, str]:
    """Turn the RECORD script's reply into (state, change)."""
    return _text(reply[0]), _text(reply[1])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
