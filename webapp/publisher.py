"""Group commit of accepted webhook events: concurrent requests share one Celery message per batch.

A request hands its events to the process's :class:`BatchPublisher` and blocks until the
message holding them is in the broker, so a 202 is only ever sent for a durable event. One
background thread collects events per source until ``http.bufferSize`` events, or
``http.batchInterval`` milliseconds after the first one (0: as soon as its previous publish
is done, so concurrent requests share messages only under load), publishes them as one
``ingest.webhooks.store_batch`` message, completes their idempotency keys in one round trip and
wakes the requests. Each batch is written to the outbox (``ingest.http.outbox``) before its
message is published, so a message the broker's Redis loses in a crash is republished by a
worker. Only ``threading`` primitives are used, so under gunicorn's gevent worker
(monkey-patched) the thread and the waits are greenlets. Every primitive is created when first
needed, never at import: gunicorn's master imports this module before a worker monkey-patches,
and a real lock or event made then would block a whole gevent worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from celery import Celery
from flask import Flask
from kombu import Queue

from ingest.config import Settings
from ingest.http.outbox import Outbox, broker_message, publish_batch, published
from ingest.tracing import batch_span, capture_context

__all__ = [
    "QUEUE",
    "TASK_NAME",
    "BatchPublisher",
    "PublishError",
    "app_lock",
    "get_publisher",
    "outbox_for",
    "producer_celery",
    "publisher_saturated",
    "send_batch",
    "stop_publisher",
    "writes_broker",
]

log = logging.getLogger(__name__)

# The same names as tasks.app and tasks.webhooks; the web process must not import those
# modules (they load worker-only code), and a test checks that the names agree.
TASK_NAME = "ingest.webhooks.store_batch"
QUEUE = "ingest.webhooks"
_EXTENSION = "ingest.publisher"

Send = Callable[[dict[str, Any]], None]
Complete = Callable[[str, list[tuple[str, str, dict[str, Any]]]], None]


class PublishError(Exception):
    """The message holding a request's events was not published; assume none of them stored."""


@dataclass
class _Waiter:
    """One request's events and the signal that wakes it once they are published (or not)."""

    entries: Sequence[dict[str, Any]]
    # A lambda, so the class in use at run time (gevent's, once patched) is looked up then.
    done: threading.Event = field(default_factory=lambda: threading.Event())
    error: BaseException | None = None
    # The request's trace context: the flusher thread publishes inside it, so a request's
    # trace leads to its batch task and on to the sink write.
    trace_context: Any = field(default_factory=capture_context)


@dataclass
class _Buffer:
    """The events waiting for one message, and the batch-level fields it will carry."""

    deadline: float
    fields: Mapping[str, Any]
    waiters: list[_Waiter] = field(default_factory=list)
    count: int = 0
    taken: bool = False  # the flusher has it: too late to withdraw a waiter


class BatchPublisher:
    """Publishes events in batches of up to ``max_events``, at most ``max_wait`` seconds late."""

    def __init__(
        self,
        send: Send,
        max_events: int,
        max_wait: float,
        complete: Complete | None = None,
        timeout: float = 15.0,
        max_pending: int | None = None,
    ) -> None:
        if max_events < 1 or max_wait < 0:
            raise ValueError("max_events must be >= 1 and max_wait >= 0")
        self._send, self._complete = send, complete
        self._max_events, self._max_wait, self._timeout = max_events, max_wait, timeout
        # Events waiting for the flusher (buffered or being published): past this, new
        # requests are refused at once rather than queued for seconds behind the others.
        self._max_pending = max_pending or 20 * max_events
        self._pending = 0
        self._cond = threading.Condition()
        self._buffers: dict[tuple[tuple[str, Any], ...], _Buffer] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="webhook-publisher", daemon=True)
        self._thread.start()

    def submit(self, fields: Mapping[str, Any], entries: Sequence[dict[str, Any]]) -> None:
        """Queue ``entries`` (payload events) and return once they are published.

        ``fields`` are the batch-level payload fields (``source``, ``sourceUri``, ...): only
        events with equal fields share a message. Raises :class:`PublishError` when the
        broker refused them, when too many events already wait for the broker
        (``max_pending``), or when ``timeout`` passed before they were taken for publishing;
        in each case none of them will be published.
        """
        if not entries:
            return
        waiter = _Waiter(entries)
        key = tuple(sorted(fields.items()))
        with self._cond:
            if self._closing:
                raise PublishError("the publisher is shutting down")
            if self._pending and self._pending + len(entries) > self._max_pending:
                raise PublishError(f"{self._pending} events already wait for the broker")
            buffer = self._buffers.get(key)
            if buffer is None:
                deadline = time.monotonic() + self._max_wait
                buffer = self._buffers[key] = _Buffer(deadline, dict(fields))
            buffer.waiters.append(waiter)
            buffer.count += len(entries)
            self._pending += len(entries)
            # Wake the flusher for a new deadline or a full buffer; otherwise let it sleep.
            if len(buffer.waiters) == 1 or buffer.count >= self._max_events:
                self._cond.notify()
        if not waiter.done.wait(self._timeout) and not self._withdraw(key, buffer, waiter):
            # Being published: the outcome comes within the broker's own timeouts.
            waiter.done.wait(self._timeout)
        if not waiter.done.is_set():
            raise PublishError("timed out waiting for the broker")
        if waiter.error is not None:
            raise PublishError(str(waiter.error)) from waiter.error

    def saturated(self) -> bool:
        """Whether half the pending room is used: new requests should be refused before any
        work is done for them (a refusal after parsing and claiming keys wastes that work)."""
        return self._pending >= self._max_pending // 2

    def _withdraw(self, key: tuple[tuple[str, Any], ...], buffer: _Buffer, waiter: _Waiter) -> bool:
        """Take a timed-out waiter's events back, if the flusher has not taken them yet."""
        with self._cond:
            if buffer.taken or waiter.done.is_set():
                return False
            buffer.waiters.remove(waiter)
            buffer.count -= len(waiter.entries)
            self._pending -= len(waiter.entries)
            if not buffer.waiters and self._buffers.get(key) is buffer:
                del self._buffers[key]
            return True

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is buffered, then stop the background thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                ready = self._take_ready()
            if ready is None:
                return
            for buffer in ready:
                try:
                    self._flush(buffer.fields, buffer.waiters)
                except Exception as exc:  # a bug here must fail these requests, not the thread
                    log.exception("flushing a webhook batch failed")
                    for waiter in buffer.waiters:
                        waiter.error = waiter.error or exc
                        waiter.done.set()
                finally:
                    with self._cond:
                        self._pending -= buffer.count

    def _take_ready(self) -> list[_Buffer] | None:
        """Wait (holding the condition) for buffers that are full or due; None once closed."""
        while True:
            now = time.monotonic()
            due = [
                key
                for key, buffer in self._buffers.items()
                if self._closing or buffer.count >= self._max_events or buffer.deadline <= now
            ]
            if due:
                taken = [self._buffers.pop(key) for key in due]
                for buffer in taken:
                    buffer.taken = True
                return taken
            if self._closing:
                return None
            deadlines = [buffer.deadline for buffer in self._buffers.values()]
            self._cond.wait(min(deadlines) - now if deadlines else None)

    def _flush(self, fields: Mapping[str, Any], waiters: list[_Waiter]) -> None:
        chunk: list[dict[str, Any]] = []
        members: list[_Waiter] = []
        for waiter in waiters:
            for entry in waiter.entries:
                if not members or members[-1] is not waiter:
                    members.append(waiter)
                chunk.append(entry)
                if len(chunk) == self._max_events:
                    self._publish(fields, chunk, members)
                    chunk, members = [], []
        if chunk:
            self._publish(fields, chunk, members)
        for waiter in waiters:
            waiter.done.set()

    def _publish(
        self, fields: Mapping[str, Any], events: list[dict[str, Any]], members: list[_Waiter]
    ) -> None:
        payload = {"batchId": uuid.uuid4().hex, **fields, "events": events}
        try:
            contexts = [w.trace_context for w in members]
            with batch_span("ingest.webhooks.publish", contexts, **{"ingest.events": len(events)}):
                self._send(payload)
        except Exception as exc:  # any broker failure fails exactly the requests in this message
            log.warning("publishing a webhook batch failed: %s", exc)
            for waiter in members:
                waiter.error = exc
            return
        if self._complete is None:
            return
        done = [(e["eventId"], e["contentHash"], _completion(e)) for e in events]
        try:
            self._complete(str(fields["source"]), done)
        except Exception as exc:
            # The events are durable: the answer stays 202. Their claims expire as in-flight
            # claims do, and content dedup in the worker drops a redelivered copy.
            log.warning("completing %d idempotency keys failed: %s", len(done), exc)


def _completion(entry: dict[str, Any]) -> dict[str, Any]:
    return {"eventId": entry["eventId"], "contentHash": entry["contentHash"]}


def producer_celery(settings: Settings) -> Celery:
    """A Celery app that only sends webhook batches: same broker, serializer and queue."""
    app = Celery("intelgraph_ingest_web", set_as_current=False)
    app.conf.update(
        broker_url=settings.effective_broker_url,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(QUEUE)],
        broker_transport_options={
            "visibility_timeout": settings.celery.visibility_timeout,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "retry_on_timeout": True,
            "health_check_interval": 30,
        },
        # A request waits for this: give up within about a second and answer 503.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.4,
        },
    )
    return app


def get_publisher(app: Flask, complete: Complete | None) -> BatchPublisher:
    """The app's publisher in this process, started on first use (after any fork)."""
    current = app.extensions.get(_EXTENSION)
    if current is not None and current[0] == os.getpid():
        return current[1]
    with app_lock(app, _EXTENSION):
        current = app.extensions.get(_EXTENSION)
        if current is not None and current[0] == os.getpid():
            return current[1]
        return _start_publisher(app, complete)


def publisher_saturated(app: Flask) -> bool:
    """Whether this process's publisher (if started) has too many events waiting already."""
    current = app.extensions.get(_EXTENSION)
    return current is not None and current[0] == os.getpid() and current[1].saturated()


def app_lock(app: Flask, name: str) -> threading.Lock:
    """A lock kept in ``app.extensions``, created at first use (after any monkey-patching)."""
    key = f"{name}.lock"
    found = app.extensions.get(key)
    if found is None:
        found = app.extensions.setdefault(key, threading.Lock())
    return cast(threading.Lock, found)


def send_batch(celery: Celery, payload: dict[str, Any]) -> None:
    """Publish one batch message to the webhook queue."""
    publish_batch(celery, TASK_NAME, QUEUE, payload)


def writes_broker(settings: Settings) -> bool:
    """Whether the outbox's Redis is the broker, so batch messages can be written with it.

    True when the broker URL is the Redis URL (``INGEST_BROKER_URL`` unset or equal): the
    queue list then lives in the database the outbox client writes. Any other broker, a
    RabbitMQ or another Redis, gets Celery's own publish after the outbox write (as does
    a web process reporting to Sentry, see ``_sentry_traces_publishing``).
    """
    broker = settings.effective_broker_url
    return broker == settings.redis_url and broker.split(":", 1)[0] in ("redis", "rediss")


def _sentry_traces_publishing() -> bool:
    """Whether Sentry's Celery integration is on: it adds its trace headers in Celery's
    publish, so with a Sentry DSN the web publishes through Celery to keep that trace."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    return sentry_sdk.get_client().get_integration(CeleryIntegration) is not None


def outbox_for(settings: Settings) -> Outbox:
    """The outbox in the main Redis, with this process's own connection pool."""
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )
    return Outbox(client, redeliver_after=settings.http.redeliver_after)


def _start_publisher(app: Flask, complete: Complete | None) -> BatchPublisher:
    settings: Settings = app.extensions["ingest.settings"]
    celery = producer_celery(settings)
    outbox = outbox_for(settings)

    direct = writes_broker(settings)

    def send(payload: dict[str, Any]) -> None:
        if direct and not _sentry_traces_publishing():
            # The outbox entry and the task message in one transaction (see broker_message).
            message = broker_message(celery, TASK_NAME, QUEUE, payload)
            outbox.put(payload, message)
            published(celery, TASK_NAME, QUEUE, message)
            return
        # Outbox first: a message lost by the broker's Redis is republished from it later.
        outbox.put(payload)
        try:
            send_batch(celery, payload)
        except Exception:
            # These requests get 503 and will be retried by their senders: do not republish.
            # If this fails too, a later republish stores events that were answered 503,
            # which content dedup and the senders' idempotency keys make harmless.
            with contextlib.suppress(Exception):
                outbox.done(str(payload["batchId"]))
            raise

    publisher = BatchPublisher(
        send,
        max_events=settings.http.buffer_size,
        max_wait=settings.http.batch_interval / 1000,
        complete=complete,
    )
    app.extensions[_EXTENSION] = (os.getpid(), publisher)
    # No flush at exit: during gunicorn's graceful stop the thread keeps serving the requests
    # still waiting, and events buffered when the process dies were never answered 202.
    return publisher


def stop_publisher(app: Flask) -> None:
    """Flush and stop the app's publisher, if this process started one."""
    current = app.extensions.pop(_EXTENSION, None)
    if current is not None and current[0] == os.getpid():
        current[1].close()
