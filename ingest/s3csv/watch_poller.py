"""The pollers of the watches: one thread per watch long-polls its SQS queue.

A poller deletes a message only after :class:`WatchIntake` settled it (its import is in the
broker, or it was a test event, a duplicate, refused or dead-lettered); a message kept for
later is made visible again soon. A stopped or killed poller leaves its received messages to
SQS, which delivers them again after the queue's visibility timeout.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import redis

from ingest.config import Settings, WatchConfig
from ingest.dlq import DeadLetterQueue
from ingest.provenance import iso_now
from ingest.s3csv.imports import ImportStore
from ingest.s3csv.watches import QueueMessage, ReceiveOutcome, WatchIntake, WatchStats

__all__ = ["WatchPoller", "sqs_client", "start_pollers"]

log = logging.getLogger(__name__)
RETRY_LATER_SECONDS = 15  # visibility of a message kept because another poller holds it
BACKLOG_EVERY = 30.0  # seconds between readings of the queue's approximate depth
_AWS_QUEUE = re.compile(r"^https://sqs\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/")


def sqs_client(settings: Settings, queue_url: str) -> Any:
    """A boto3 SQS client for ``queue_url`` (the AWS credential chain; the SQS endpoint setting)."""
    import boto3
    from botocore.config import Config

    match = _AWS_QUEUE.match(queue_url)
    region = match.group(1) if match else settings.s3csv.region
    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=settings.s3csv.watch_wait_seconds + 15,
    )
    return boto3.client(
        "sqs",
        endpoint_url=settings.effective_sqs_endpoint_url,
        region_name=region,
        config=config,
    )


class WatchPoller:
    """Receives from one watch's queue, hands each receive to the intake, settles messages."""

    def __init__(
        self,
        watch: WatchConfig,
        sqs: Any,
        intake: WatchIntake,
        wait_seconds: int = 20,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.watch, self.sqs, self.intake = watch, sqs, intake
        self.wait_seconds = wait_seconds
        self.stats = WatchStats(intake.store.client, watch.name)
        self.clock = clock or time.monotonic
        self._backlog_at: float | None = None

    def poll_once(self) -> ReceiveOutcome:
        """One long-poll receive, handled and settled."""
        answer = self.sqs.receive_message(
            QueueUrl=self.watch.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["SentTimestamp"],
        )
        messages = [
            QueueMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m.get("Body", ""),
                sent_at=_sent_at(m),
            )
            for m in answer.get("Messages", [])
        ]
        outcome = self.intake.handle(messages)
        self._settle(outcome)
        self._read_backlog()
        return outcome

    def _settle(self, outcome: ReceiveOutcome) -> None:
        for start in range(0, len(outcome.delete), 10):
            batch = outcome.delete[start : start + 10]
            answer = self.sqs.delete_message_batch(
                QueueUrl=self.watch.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(batch)
                ],
            )
            for failed in answer.get("Failed", []):
                # It comes back and is then a duplicate: settled, deleted.
                log.warning("watch %s: a delete failed: %s", self.watch.name, failed)
        for start in range(0, len(outcome.retry_later), 10):
            batch = outcome.retry_later[start : start + 10]
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.watch.queue_url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": m.receipt_handle,
                        "VisibilityTimeout": RETRY_LATER_SECONDS,
                    }
                    for i, m in enumerate(batch)
                ],
            )

    def _read_backlog(self) -> None:
        now = self.clock()
        if self._backlog_at is not None and now - self._backlog_at < BACKLOG_EVERY:
            return
        self._backlog_at = now
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.watch.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        ).get("Attributes", {})
        self.stats.add(
            {},
            backlog=int(attributes.get("ApproximateNumberOfMessages", 0)),
            backlogInFlight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            backlogAt=iso_now(),
        )

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; errors are recorded and retried with a growing pause."""
        pause = 1.0
        while not stop.is_set():
            try:
                self.poll_once()
                pause = 1.0
            except Exception as exc:
                log.exception("watch %s: polling %s failed", self.watch.name, self.watch.queue_url)
                with contextlib.suppress(redis.RedisError):
                    error = f"{type(exc).__name__}: {exc}"[:500]
                    self.stats.add({}, lastError=error, lastErrorAt=iso_now())
                stop.wait(pause)
                pause = min(pause * 2, 30.0)


def _sent_at(message: dict[str, Any]) -> float | None:
    raw = message.get("Attributes", {}).get("SentTimestamp")
    try:
        return int(raw) / 1000.0 if raw is not None else None
    except ValueError:
        return None


def start_pollers(
    settings: Settings,
    client: redis.Redis,
    dlq: DeadLetterQueue,
    dispatch: Callable[[str], None],
    known_schemas: Callable[[str], bool],
    stop: threading.Event,
) -> list[threading.Thread]:
    """Start one daemon thread per configured watch whose schema exists; return them."""
    threads = []
    store = ImportStore(client)
    for watch in settings.s3csv.watches:
        if not known_schemas(watch.schema_name):
            message = f"unknown schema {watch.schema_name!r}: the watch is not polled"
            log.error("watch %s: %s", watch.name, message)
            WatchStats(client, watch.name).add({}, lastError=message, lastErrorAt=iso_now())
            continue
        intake = WatchIntake(watch, store, dlq, dispatch, settings.s3csv.allowed_buckets)
        poller = WatchPoller(
            watch, sqs_client(settings, watch.queue_url), intake, settings.s3csv.watch_wait_seconds
        )
        thread = threading.Thread(
            target=poller.run, args=(stop,), name=f"ingest-watch-{watch.name}", daemon=True
        )
        thread.start()
        threads.append(thread)
        log.info("watch %s: polling %s", watch.name, watch.queue_url)
    return threads
