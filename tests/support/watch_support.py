"""A watched prefix on the local S3 server: its SQS queue, the bucket notification, the env."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import redis

from ingest.s3csv.imports import ImportStore
from ingest.s3csv.watches import WatchStats
from tests.support.services import wait_for


class WatchedPrefix:
    """``s3://bucket/drop/`` notifies a fresh moto SQS queue of every object created."""

    def __init__(self, endpoint: str, s3: Any, bucket: str, schema: str = "entities") -> None:
        self.s3, self.bucket, self.schema = s3, bucket, schema
        self.name = f"drops-{uuid.uuid4().hex[:6]}"
        self.sqs = boto3.client(
            "sqs",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.queue_url = self.sqs.create_queue(
            QueueName=self.name, Attributes={"VisibilityTimeout": "5"}
        )["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": arn["Attributes"]["QueueArn"], "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )

    def env(self, base: dict[str, str], **extra: str) -> dict[str, str]:
        watch = {
            "name": self.name,
            "queueUrl": self.queue_url,
            "bucket": self.bucket,
            "prefix": "drop/",
            "schema": self.schema,
            "purpose": "watch-test",
            "classification": "test",
        }
        return dict(
            base,
            INGEST_S3CSV__WATCHES=json.dumps([watch]),
            INGEST_S3CSV__WATCH_WAIT_SECONDS="1",
            **extra,
        )

    def stats(self, redis_url: str) -> dict[str, Any]:
        return WatchStats(redis.Redis.from_url(redis_url), self.name).read()

    def imports(self, redis_url: str) -> list[dict[str, Any]]:
        store = ImportStore(redis.Redis.from_url(redis_url))
        return store.list_recent(watch=self.name, limit=1000)

    def wait_settled(self, redis_url: str, imports: int, timeout: float = 120) -> list[dict]:
        """Wait until ``imports`` imports of this watch finished and the queue is empty."""

        def settled() -> list[dict] | None:
            found = self.imports(redis_url)
            done = [s for s in found if s["status"] in ("succeeded", "failed")]
            if len(found) < imports or len(done) < len(found):
                return None
            depth = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            if any(int(v) for v in depth.values()):
                return None
            return found

        return wait_for(settled, timeout, 0.2, f"{imports} imports of the watch")  # type: ignore[no-any-return]
