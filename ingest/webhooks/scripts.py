"""Lua scripts whose concurrent calls share Redis round trips: :class:`CoalescedScript`.

The web's accept scripts go through it (``ingest.webhooks.stream``): under load, the calls
of one process queue behind the one in flight and go together as one pipeline, each still
its own atomic script, on one dedicated connection, packed by hiredis.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import redis

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis is a dependency; without it, the same bytes come from Python
    _hiredis_pack = None  # type: ignore[assignment]

__all__ = ["CoalescedScript"]


class _Call:
    """One call of a :class:`CoalescedScript`: its input, and its reply once there is one."""

    __slots__ = ("answered", "args", "batch", "error", "keys", "ready", "reply")

    def __init__(self, keys: Sequence[Any], args: Sequence[Any]) -> None:
        self.keys = keys
        self.args = args
        # Made only for a call that queues (created after any monkey-patching: a gevent
        # event in a gevent worker); a call sent at once never waits.
        self.ready: threading.Event | None = None
        self.reply: Any = None
        self.error: BaseException | None = None
        self.answered = False  # a reply or an error is in (a script may well reply nil)
        # Set when this call is handed the queued calls (itself first) to send for everyone.
        self.batch: list[_Call] | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.reply


class CoalescedScript:
    """A Lua script whose concurrent calls share Redis round trips (a pipeline).

    A call made while no other is in flight is sent at once, alone: when idle nothing
    waits. Calls made while one is in flight queue up; when it returns, the first of them
    sends every queued call in one pipeline and hands each its reply. Under load, requests
    thus share round trips, which cost a web worker far more CPU (system calls, a greenlet
    switch per read, the client's per-command layers) than the script runs in Redis. Each
    call still runs as its own script, atomically, in the order the calls queued.

    Every call gets its own reply or its own error; a failed round trip fails the calls it
    carried. ``wait_seconds`` bounds how long a queued call waits for its turn before it
    gives up with ``redis.exceptions.TimeoutError`` (the client's own timeouts bound a
    round trip, so only a stuck sender could keep it waiting that long).
    """

    def __init__(self, client: redis.Redis, script: str, wait_seconds: float = 30.0) -> None:
        self._client = client
        self._script = client.register_script(script)
        self._text = script
        self._sha = hashlib.sha1(script.encode("utf-8")).hexdigest()  # as Redis names it
        self._wait = wait_seconds
        self._lock = threading.Lock()
        self._queue: list[_Call] = []
        self._busy = False
        self._conn: Any = None

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script with ``keys`` and ``args``; return its reply (or raise its error)."""
        call = _Call(keys, args)
        with self._lock:
            lead = not self._busy
            if lead:
                self._busy = True
            else:
                call.ready = threading.Event()
                self._queue.append(call)
        if not lead:
            self._await_turn(call)
            if call.batch is None:
                return call.outcome()
        self._send_then_hand_over(call, call.batch or [call])
        return call.outcome()

    def _await_turn(self, call: _Call) -> None:
        """Wait until ``call`` has its reply or was made the sender of the queued calls."""
        assert call.ready is not None  # a queued call
        while not call.ready.wait(self._wait):
            with self._lock:
                if call in self._queue:
                    self._queue.remove(call)
                    raise redis.exceptions.TimeoutError("no turn to reach Redis in time")
            # Taken into a round trip already: its reply is on the way.

    def _send_then_hand_over(self, own: _Call, batch: list[_Call]) -> None:
        try:
            self._send(batch)
        except Exception as exc:  # the round trip failed: so did every call it carried
            for call in batch:
                # Each its own copy: one instance raised in many greenlets would pile up
                # every raise's frames in its traceback.
                call.error, call.answered = _own_copy(exc), True
        finally:
            for call in batch:
                if not call.answered:  # the sender was interrupted
                    call.error = redis.exceptions.ConnectionError("the round trip was cut off")
                if call is not own and call.ready is not None:
                    call.ready.set()
            self._hand_over()

    def _hand_over(self) -> None:
        """Make the first queued call the sender of all queued calls, or go idle."""
        with self._lock:
            queued, self._queue = self._queue, []
            self._busy = bool(queued)
        if queued:
            first = queued[0]
            first.batch = queued
            assert first.ready is not None  # every queued call has its event
            first.ready.set()

    def _send(self, batch: list[_Call]) -> None:
        replies = self._pipeline(batch)
        if any(_no_script(r) for r in replies):
            # Redis restarted or was flushed: load the script once, then run the calls it
            # refused (a refused call did nothing, so running it now is its only run).
            self._client.script_load(self._text)
            missing = [c for c, r in zip(batch, replies, strict=True) if _no_script(r)]
            for call, reply in zip(missing, self._pipeline(missing), strict=True):
                replies[batch.index(call)] = reply
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                call.error = reply
            else:
                call.reply = reply
            call.answered = True

    def _pipeline(self, calls: list[_Call]) -> list[Any]:
        """Send every call's ``EVALSHA`` in one write and read their replies in order.

        The commands are packed here (RESP, one ``bytes.join``) rather than by redis-py,
        whose per-argument encoding cost as much CPU as the rest of a webhook request. A
        write that fails is retried once on a fresh connection (nothing ran); a failure
        after the write is not, since the scripts may have run.
        """
        packed = b"".join(_pack_evalsha(self._sha, call.keys, call.args) for call in calls)
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.send_packed_command([packed], check_health=False)
            except (redis.exceptions.ConnectionError, OSError):
                conn.disconnect()
                if attempt == 2:
                    raise
                continue
            try:
                replies: list[Any] = []
                for _ in calls:
                    try:
                        replies.append(conn.read_response())
                    except redis.exceptions.ResponseError as exc:
                        replies.append(exc)
                return replies
            except BaseException:
                conn.disconnect()
                raise
        raise AssertionError("unreachable")

    def _connection(self) -> Any:
        """This script's own connection: only one round trip is ever in flight (the queued
        calls wait for it), so one connection serves every call, without the pool's
        per-checkout readiness poll. It reconnects by itself after a failure."""
        if self._conn is None:
            pool = self._client.connection_pool
            self._conn = pool.connection_class(**pool.connection_kwargs)
        return self._conn


def _pack_evalsha(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    """``EVALSHA sha len(keys) *keys *args`` as RESP: by hiredis's packer (C, ten times as
    fast on a 1,000-event batch), or in Python for what it refuses (lone surrogates)."""
    if _hiredis_pack is not None:
        try:
            return _hiredis_pack(("EVALSHA", sha, len(keys), *keys, *args))
        except UnicodeEncodeError:
            pass
    return _pack_in_python(sha, keys, args)


def _pack_in_python(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    parts = [b"EVALSHA", sha.encode(), str(len(keys)).encode()]
    parts += [_arg(v) for v in keys]
    parts += [_arg(v) for v in args]
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _arg(value: Any) -> bytes:
    """An argument as redis-py would encode it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bool):
        raise TypeError("booleans are not Redis arguments")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    raise TypeError(f"not a Redis argument: {type(value).__name__}")


def _own_copy(exc: Exception) -> Exception:
    try:
        copy = type(exc)(*exc.args)
    except Exception:
        return exc
    copy.__cause__ = exc
    return copy


def _no_script(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)
