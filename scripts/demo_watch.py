"""The demo's watch: a prefix of the demo bucket notifies a local SQS queue, and a file dropped
there is imported by the workers without any import call."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WATCH = "demo-drops"
PREFIX = "drop/"


def _clients(env: dict[str, str]) -> tuple[Any, Any]:
    import boto3

    common = {
        "region_name": env["AWS_DEFAULT_REGION"],
        "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
    }
    sqs_endpoint = env.get("INGEST_SQS_ENDPOINT_URL") or env["INGEST_S3_ENDPOINT_URL"]
    s3 = boto3.client("s3", endpoint_url=env["INGEST_S3_ENDPOINT_URL"], **common)
    return s3, boto3.client("sqs", endpoint_url=sqs_endpoint, **common)


def configure_watch(env: dict[str, str], bucket: str, say: Callable[[str], None]) -> bool:
    """Create the queue and the bucket notification, and add the watch to the workers' env."""
    if env.get("INGEST_S3CSV__WATCHES"):
        say("using the configured watches (INGEST_S3CSV__WATCHES)")
        return False
    s3, sqs = _clients(env)
    try:
        queue_url = sqs.create_queue(QueueName=WATCH)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": arn["Attributes"]["QueueArn"],
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX}]}},
                    }
                ]
            },
        )
    except Exception as exc:  # an S3 server without SQS or notifications (MinIO, say)
        say(f"no watch in this demo: the local endpoint has no SQS notifications ({exc})")
        return False
    watch = {
        "name": WATCH,
        "queueUrl": queue_url,
        "bucket": bucket,
        "prefix": PREFIX,
        "schema": "entities",
        "purpose": "demo",
        "classification": "unclassified",
    }
    env["INGEST_S3CSV__WATCHES"] = json.dumps([watch])
    env.setdefault("INGEST_S3CSV__WATCH_WAIT_SECONDS", "2")
    say(f"watch {WATCH}: s3://{bucket}/{PREFIX} notifies {queue_url} (S3 event notifications)")
    return True


def drop_file(
    base: str,
    env: dict[str, str],
    bucket: str,
    fixture: Path,
    say: Callable[[str], None],
    wait_for: Callable[..., Any],
    http: Callable[..., tuple[int, Any]],
) -> dict[str, Any]:
    """Put a CSV into the watched prefix, wait for the import the watch starts, show counters."""
    s3, _ = _clients(env)
    run = time.strftime("%Y%m%d-%H%M%S")
    key = f"{PREFIX}{run}/partner export.csv"
    # The fixture's rows under new ids: rows the golden import did not store already.
    body = fixture.read_bytes().replace(b"\ne", f"\nw{run}-e".encode())
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    say(f"dropped a CSV into s3://{bucket}/{key}: no import call")
    auth = {"Authorization": f"Bearer {env['INGEST_ADMIN_TOKEN']}"}

    def finished() -> dict[str, Any] | None:
        listed = http("GET", f"{base}/admin/imports?watch={WATCH}&limit=1", headers=auth)[1]
        return listed[0] if listed and listed[0]["status"] in ("succeeded", "failed") else None

    state: dict[str, Any] = wait_for(finished, 120, 0.2, "the watch's import to finish")
    say(
        f"watch {WATCH} started import {state['importId']}: {state['status']}, "
        f"{state['rowsStored']} rows stored from {state['notification']['objects'][0]['key']}"
    )
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    say("dropped the same bytes again: the watch must start nothing new")

    def counters() -> dict[str, Any] | None:
        shown = http("GET", f"{base}/admin/watches", headers=auth)[1]
        found = next(w for w in shown if w["name"] == WATCH)
        return found if found["duplicates"] >= 1 else None

    watch = wait_for(counters, 60, 0.2, "the watch to see the re-upload")
    say(
        f"watch {WATCH}: last message {watch['lastMessageAt']}, {watch['importsStarted']} "
        f"imports started, {watch['duplicates']} duplicates, {watch['messagesRefused']} "
        f"messages refused, lag {watch['lagSeconds']}s"
    )
    keys = ("importsStarted", "messagesReceived", "duplicates", "messagesRefused", "malformed")
    return {
        "importId": state["importId"],
        "status": state["status"],
        "rowsStored": state["rowsStored"],
        "counters": {k: watch[k] for k in (*keys, "lastMessageAt", "lagSeconds")},
    }
