"""Drive the demo: start the local stack, run the Procfile processes, ingest, and summarise."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import demo_watch  # noqa: E402  (scripts/, beside this file)

from devstack import (  # noqa: E402
    ManagedProcess,
    MotoServer,
    RedisServer,
    free_port,
    procfile_commands,
    wait_for,
)

DEMO_SOURCE = "demo"
DEMO_SECRET = "whsec_ZGVtby1zZWNyZXQtZGVtby1zZWNyZXQtZGVtby0xMjM0"
# Sources with provider presets: the demo signs one event the way each provider does.
STRIPE_SOURCE, STRIPE_SECRET = "demo-stripe", "whsec_demo_stripe_endpoint_secret"
GITHUB_SOURCE, GITHUB_SECRET = "demo-github", "demo-github-webhook-secret"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None and raw is None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Stack:
    """The demo's processes, stopped in reverse order on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[ManagedProcess] = []
        self.env = dict(os.environ)
        self.watching = False

    def start_services(self) -> None:
        if not self.env.get("INGEST_REDIS_URL"):
            redis = RedisServer(self.workdir / "redis").start()
            self.processes.append(redis)
            self.env["INGEST_REDIS_URL"] = redis.url
            say(f"started a local Redis (AOF on) at {redis.url}")
        else:
            say(f"using the configured Redis {self.env['INGEST_REDIS_URL']}")
        if not self.env.get("INGEST_S3_ENDPOINT_URL"):
            s3 = MotoServer(log_path=self.workdir / "logs" / "s3.log").start()
            self.processes.append(s3)
            self.env["INGEST_S3_ENDPOINT_URL"] = s3.url
            self.env.setdefault("AWS_ACCESS_KEY_ID", "testing")
            self.env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            say(f"started a local S3 server at {s3.url}")
        self.env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.env.setdefault("INGEST_SINK_URI", f"file://{self.workdir / 'sink'}")
        self.env.setdefault("INGEST_ADMIN_TOKEN", "demo-admin-token")
        self.env.setdefault(
            "INGEST_HTTP__SOURCES",
            json.dumps(
                {
                    DEMO_SOURCE: {
                        "signature": {"scheme": "standard-webhooks", "secrets": [DEMO_SECRET]},
                        "purpose": "demo",
                        "classification": "unclassified",
                    },
                    STRIPE_SOURCE: {
                        "provider": "stripe",
                        "signature": {"secrets": [STRIPE_SECRET]},
                        "purpose": "demo",
                    },
                    GITHUB_SOURCE: {
                        "provider": "github",
                        "signature": {"secrets": [GITHUB_SECRET]},
                        "purpose": "demo",
                    },
                }
            ),
        )
        bucket = self.env.get("INGEST_DEMO_BUCKET", "intelgraph-demo")
        self.watching = demo_watch.configure_watch(self.env, bucket, say)
        self.env["PORT"] = self.env.get("PORT") or str(free_port())
        self.env["FLOWER_PORT"] = self.env.get("FLOWER_PORT") or str(free_port())

    def start_procfile(self, names: tuple[str, ...]) -> None:
        commands = procfile_commands()
        for name in names:
            proc = ManagedProcess(
                name,
                ["bash", "-c", f"exec {commands[name]}"],
                env=self.env,
                log_path=self.workdir / "logs" / f"{name}.log",
                cwd=ROOT,
            )
            self.processes.append(proc.start())
            say(f"started `{name}`: {commands[name]}")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop(signal.SIGTERM, timeout=20)


def wait_ready(base: str, stack: Stack) -> None:
    def ready() -> bool:
        for proc in stack.processes:
            if not proc.alive():
                raise SystemExit(f"`{proc.name}` exited early:\n{proc.log_tail()}")
        try:
            return http("GET", f"{base}/readyz")[0] == 200
        except OSError:
            return False

    wait_for(ready, 90, 0.2, "the web process to be ready")


def wait_worker(stack: Stack) -> float:
    from celery import Celery

    app = Celery(broker=stack.env["INGEST_REDIS_URL"], backend=stack.env["INGEST_REDIS_URL"])
    app.conf.task_routes = {"ingest.control.*": {"queue": "ingest.control"}}
    started = time.monotonic()
    result = app.send_task("ingest.control.ping", queue="ingest.control")
    if result.get(timeout=120) != "pong":
        raise SystemExit("the worker did not answer")
    return time.monotonic() - started


def import_golden(base: str, stack: Stack) -> dict[str, Any]:
    """Upload fixtures/entities to the local S3 and import them through POST /admin/imports."""
    import boto3

    env = stack.env
    s3 = boto3.client(
        "s3",
        endpoint_url=env["INGEST_S3_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
    )
    bucket = env.get("INGEST_DEMO_BUCKET", "intelgraph-demo")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    files = sorted((ROOT / "fixtures" / "entities").iterdir())
    for path in files:
        s3.put_object(Bucket=bucket, Key=f"golden/{path.name}", Body=path.read_bytes())
    say(f"uploaded {len(files)} golden fixtures to s3://{bucket}/golden/")
    auth = {"Authorization": f"Bearer {env['INGEST_ADMIN_TOKEN']}"}
    status, answer = http(
        "POST",
        f"{base}/admin/imports",
        {
            "uri": f"s3://{bucket}/golden/",
            "schema": "entities",
            "purpose": "demo",
            "classification": "unclassified",
        },
        headers=auth,
    )
    if status != 202:
        raise SystemExit(f"POST /admin/imports answered {status}: {answer}")
    say(f"import {answer['importId']} queued through POST /admin/imports")

    def finished() -> dict[str, Any] | None:
        state = http("GET", f"{base}/admin/imports/{answer['importId']}", headers=auth)[1]
        return state if state["status"] in ("succeeded", "failed") else None

    state: dict[str, Any] = wait_for(finished, 300, 0.2, "the import to finish")
    say(
        f"import {state['status']}: {state['objects']} objects, {state['rowsStored']} rows "
        f"stored, {state['duplicatesDropped']} duplicates dropped, {state['rowsRejected']} "
        f"rows rejected to the DLQ"
    )
    return state


def send_webhooks(base: str, stack: Stack, count: int = 200) -> dict[str, Any]:
    """Send a burst of signed events, every fifth one retried, and wait until all are stored."""
    from concurrent.futures import ThreadPoolExecutor

    from ingest.webhooks.signatures import sign_standard_webhook

    sources = json.loads(stack.env["INGEST_HTTP__SOURCES"])
    source = DEMO_SOURCE if DEMO_SOURCE in sources else next(iter(sources))
    secret = sources[source]["signature"]["secrets"][0]
    run = time.strftime("%H%M%S")

    def send(i: int) -> int:
        event = {"type": "sighting", "id": f"{run}-{i}", "seq": i, "note": "demo event"}
        body = json.dumps(event).encode()
        msg_id, ts = f"msg-{run}-{i}", int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign_standard_webhook(secret, msg_id, ts, body),
        }
        return http("POST", f"{base}/v1/webhooks/{source}", headers=headers, raw=body)[0]

    with ThreadPoolExecutor(16) as pool:
        first = list(pool.map(send, range(count)))
        retried = list(pool.map(send, range(0, count, 5)))  # the partner retries some
    codes = first + retried
    accepted = codes.count(202)
    say(
        f"sent {len(codes)} signed events to /v1/webhooks/{source}: {accepted} accepted (202), "
        f"{codes.count(200)} duplicates (200), {len(codes) - accepted - codes.count(200)} other"
    )

    def stored() -> int:
        from ingest.provenance.verify import records_at

        found = sum(
            1
            for r in records_at(stack.env["INGEST_SINK_URI"])
            if r.record["provenance"].get("sourceType") == "HTTP"
            and str(r.record["data"].get("id", "")).startswith(f"{run}-")
        )
        return found if found >= accepted else 0

    held = wait_for(stored, 120, 0.2, "every accepted event to be stored")
    say(f"all {held} accepted events are in the sink, each once")
    return {
        "sent": len(codes),
        "accepted": accepted,
        "duplicates": codes.count(200),
        "other": len(codes) - accepted - codes.count(200),
        "stored": held,
    }


def send_provider_events(base: str, stack: Stack) -> dict[str, Any]:
    """Send one Stripe-signed and one GitHub-signed event, each twice (the provider retries),
    and wait until both are stored."""
    import hashlib
    import hmac

    from ingest.webhooks.signatures import sign_hmac_sha256

    sources = json.loads(stack.env["INGEST_HTTP__SOURCES"])
    if STRIPE_SOURCE not in sources or GITHUB_SOURCE not in sources:
        say("INGEST_HTTP__SOURCES has no demo-stripe/demo-github sources: provider events skipped")
        return {}
    run = time.strftime("%H%M%S")
    stripe_event = {
        "id": f"evt_demo_{run}",
        "object": "event",
        "type": "invoice.paid",
        "created": int(time.time()),
        "data": {"object": {"id": f"in_demo_{run}", "amount_paid": 2000}},
    }
    github_event = {"ref": "refs/heads/main", "after": f"demo{run}", "repository": {"id": 1}}
    answers: dict[str, list[int]] = {"stripe": [], "github": []}
    for _attempt in range(2):  # the second attempt is the provider's retry: 200 duplicate
        body = json.dumps(stripe_event).encode()
        ts = int(time.time())
        signed = f"{ts}.".encode() + body
        digest = hmac.new(STRIPE_SECRET.encode(), signed, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "Stripe-Signature": f"t={ts},v1={digest}"}
        url = f"{base}/v1/webhooks/{STRIPE_SOURCE}"
        answers["stripe"].append(http("POST", url, headers=headers, raw=body)[0])
        body = json.dumps(github_event).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": f"demo-delivery-{run}",
            "X-Hub-Signature-256": sign_hmac_sha256(GITHUB_SECRET, body),
        }
        url = f"{base}/v1/webhooks/{GITHUB_SOURCE}"
        answers["github"].append(http("POST", url, headers=headers, raw=body)[0])
    say(
        f"sent a Stripe-signed event to /v1/webhooks/{STRIPE_SOURCE} (answers {answers['stripe']})"
        f" and a GitHub-signed one to /v1/webhooks/{GITHUB_SOURCE} (answers {answers['github']})"
    )

    def stored() -> int:
        from ingest.provenance.verify import records_at

        wanted = {f"evt_demo_{run}", f"demo{run}"}
        found = [
            r.record["data"]
            for r in records_at(stack.env["INGEST_SINK_URI"])
            if r.record["data"].get("id") in wanted or r.record["data"].get("after") in wanted
        ]
        return len(found) if len(found) >= 2 else 0

    if answers["stripe"][0] == 202 and answers["github"][0] == 202:
        held = wait_for(stored, 60, 0.2, "the Stripe and GitHub events to be stored")
        say(f"both provider events are in the sink ({held} records)")
    return answers


def dlq_summary(base: str, stack: Stack) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {stack.env['INGEST_ADMIN_TOKEN']}"}
    listing = http("GET", f"{base}/admin/dlq?limit=1000", headers=auth)[1]
    kinds: dict[str, int] = {}
    for entry in listing["entries"]:
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    return {
        "depth": listing["depth"],
        "byKind": kinds,
        "examples": [f"{e['source']} : {e['reason']}" for e in listing["entries"][:3]],
    }


def verify_sink(stack: Stack) -> dict[str, Any]:
    from ingest.config import load_settings
    from ingest.provenance.verify import records_at, verify_records
    from ingest.runtime import Runtime

    uri = stack.env["INGEST_SINK_URI"]
    s3 = Runtime(load_settings(stack.env)).s3 if uri.startswith("s3://") else None
    report = verify_records(records_at(uri, s3_client=s3))
    return {
        "records": report.records,
        "problems": report.problems,
        "hashesRecomputed": report.hashes_recomputed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--workdir", default=str(ROOT / "var" / "demo" / time.strftime("%Y%m%d-%H%M%S"))
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the processes running until Ctrl-C"
    )
    args = parser.parse_args()
    stack = Stack(Path(args.workdir))
    stack.workdir.mkdir(parents=True, exist_ok=True)
    say(f"working directory {stack.workdir}")
    try:
        stack.start_services()
        stack.start_procfile(("web", "worker", "flower"))
        base = f"http://127.0.0.1:{stack.env['PORT']}"
        wait_ready(base, stack)
        say(f"web is ready at {base} (/readyz answered 200)")
        took = wait_worker(stack)
        say(f"worker answered a ping through the broker in {took:.2f}s")
        state = import_golden(base, stack)
        summary: dict[str, Any] = {
            "web": base,
            "flower": f"http://127.0.0.1:{stack.env['FLOWER_PORT']}",
            "sink": stack.env["INGEST_SINK_URI"],
            "import": {
                k: state[k]
                for k in (
                    "importId",
                    "status",
                    "objects",
                    "bytesProcessed",
                    "rowsStored",
                    "duplicatesDropped",
                    "rowsRejected",
                )
            },
        }
        if stack.watching:
            bucket = stack.env.get("INGEST_DEMO_BUCKET", "intelgraph-demo")
            fixture = ROOT / "fixtures" / "entities" / "clean.csv"
            summary["watch"] = demo_watch.drop_file(
                base, stack.env, bucket, fixture, say, wait_for, http
            )
        summary["webhooks"] = send_webhooks(base, stack)
        summary["providerEvents"] = send_provider_events(base, stack)
        summary["deadLettered"] = dlq_summary(base, stack)
        summary["provenanceVerify"] = verify_sink(stack)
        print(json.dumps({"summary": summary}, indent=2))
        if args.keep_running:
            say("running; press Ctrl-C to stop")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        stack.stop()
        say(f"stopped; logs are in {stack.workdir / 'logs'}")


if __name__ == "__main__":
    sys.exit(main())
