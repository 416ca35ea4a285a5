"""The worker's webhook dispatcher: start a drain task when a source's stream has events.

Every worker's main process runs one dispatcher thread. It listens on the streams' wake-up
channel (``ingest.webhooks.stream.WAKE_CHANNEL``), which the web's accept script publishes to
at most once per source every few milliseconds, and it polls every source's backlog every
``POLL_SECONDS`` as well, so a wake-up lost (Pub/Sub delivers at most once) or a drain message
lost only delays storing. Starting a drain takes its slot's lease first (``SET NX``), so of
several workers woken together only one sends the task; a running drain keeps its lease and
reads what arrives meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from ingest.config import Settings, load_settings
from ingest.runtime import Runtime
from ingest.webhooks.drain import StreamDrainer
from ingest.webhooks.stream import SOURCES_KEY, WAKE_CHANNEL
from tasks.webhooks import DRAIN_TASK, QUEUE

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
RESCAN_SECONDS = 30.0


class Dispatcher:
    """Starts drains (slot 0) for sources with events waiting and no drain running."""

    def __init__(self, app: Celery, client: redis.Redis, settings: Settings) -> None:
        self._app = app
        self._client = client
        http = settings.http
        self._drainer = StreamDrainer(
            client,
            "dispatcher",
            batch_size=http.buffer_size,
            redeliver_after=http.redeliver_after,
            max_deliveries=settings.celery.max_retries + 1,
        )
        self._idle_s = float(http.redeliver_after)
        self._stop = threading.Event()
        self.sources: set[str] = set(http.sources)
        self._scanned = 0.0

    def dispatch(self, source: str) -> bool:
        """Send a drain for ``source`` unless one holds slot 0; True when one was sent."""
        token = self._drainer.acquire(source, 0)
        if token is None:
            return False
        try:
            # ignore_result: nobody waits for a drain's result, and without it Celery would
            # subscribe this thread to the task's result channel (its result consumer is
            # neither meant for other threads nor ever unsubscribed here).
            self._app.send_task(
                DRAIN_TASK, args=[source, 0, token], queue=QUEUE, ignore_result=True
            )
        except Exception:
            self._drainer.release(source, 0, token)
            raise
        return True

    def poll(self) -> int:
        """Start drains for every source with undelivered events, or pending ones idle past
        ``redeliverAfter`` (a drain died); returns how many were started."""
        now = time.monotonic()
        if now - self._scanned > RESCAN_SECONDS:
            # The sources the web processes named (one may know sources this worker's config
            # lacks); a SCAN for stream keys would walk every idempotency key too.
            self._scanned = now
            for name in self._client.smembers(SOURCES_KEY):
                self.sources.add(name.decode() if isinstance(name, bytes) else str(name))
        started = 0
        for source in sorted(self.sources):
            undelivered, pending = self._drainer.backlog(source)
            stale = False
            if pending and not undelivered:
                idle = self._drainer.oldest_pending_idle(source)
                stale = idle is not None and idle >= self._idle_s
            if (undelivered or stale) and self.dispatch(source):
                started += 1
        return started

    def run_forever(self) -> None:
        """Listen for wake-ups and poll until :meth:`stop`; survives Redis outages."""
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # Redis down or restarted: wait, then subscribe again
                log.warning("webhook dispatcher: %s; retrying in 1 s", exc)
                self._stop.wait(1)

    def stop(self) -> None:
        """Make :meth:`run_forever` return (within ``POLL_SECONDS``)."""
        self._stop.set()

    def _listen(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(WAKE_CHANNEL)
        try:
            self.poll()  # events accepted while nobody listened
            next_poll = time.monotonic() + POLL_SECONDS
            while not self._stop.is_set():
                wait = max(0.0, next_poll - time.monotonic())
                message = pubsub.get_message(timeout=wait)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    source = data.decode() if isinstance(data, bytes) else str(data)
                    self.sources.add(source)
                    self.dispatch(source)
                if time.monotonic() >= next_poll:
                    self.poll()
                    next_poll = time.monotonic() + POLL_SECONDS
        finally:
            pubsub.close()


@worker_ready.connect
def _start_dispatcher(sender: Any = None, **_: Any) -> None:
    if sender is None:
        return
    settings = load_settings()
    dispatcher = Dispatcher(sender.app, Runtime(settings).redis, settings)
    threading.Thread(
        target=dispatcher.run_forever, name="ingest-webhook-dispatcher", daemon=True
    ).start()
