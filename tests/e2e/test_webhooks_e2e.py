"""Webhooks through the Procfile's real `web` (gunicorn/gevent) and `worker` into the sink."""

from __future__ import annotations

import base64
import json
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook

from ingest.provenance.verify import records_at, verify_records
from tests.support.processes import ProcessGroup
from tests.support.services import wait_for
from tests.support.webhook_stack import start_stack, stored_event_ids

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-secret-of-32-bytes!!").decode()
TINY_RATE, TINY_BURST = 2.0, 10
SOURCES = {
    "acme": {
        "signature": {"scheme": "standard-webhooks", "secrets": [SECRET]},
        "purpose": "case-4711",
        "classification": "internal",
        "rateLimit": {"maxPerSecond": 5000, "burstSize": 5000},
    },
    "tiny": {
        "signature": {"scheme": "none"},
        "purpose": "limits",
        "rateLimit": {"maxPerSecond": TINY_RATE, "burstSize": TINY_BURST},
    },
}


@pytest.fixture()
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return dict(stack_env, INGEST_HTTP__SOURCES=json.dumps(SOURCES))


def signed(event: dict[str, Any], msg_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    now = datetime.now(UTC)
    return body, {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, now, body.decode()),
    }


def post_event(session: requests.Session, base: str, n: int, tag: str) -> tuple[str, int]:
    """Send event ``n``; the answer's status, or 0 when the connection failed."""
    msg_id = f"{tag}-{n}"
    body, headers = signed({"n": n, "tag": tag}, msg_id)
    try:
        answer = session.post(f"{base}/v1/webhooks/acme", data=body, headers=headers, timeout=10)
    except requests.RequestException:
        return msg_id, 0
    return msg_id, answer.status_code


def test_concurrent_signed_events_are_stored_once_each(
    env: dict[str, str], procs: ProcessGroup, sink_dir: Path
) -> None:
    _, base = start_stack(procs, env)
    tag = uuid.uuid4().hex[:8]

    def client(worker: int) -> list[tuple[str, int]]:
        mine = range(worker * 15, worker * 15 + 15)
        with requests.Session() as session:
            answers = [post_event(session, base, n, tag) for n in mine]
            # A delivery retried after its answer: the same webhook-id and body again.
            return answers + [post_event(session, base, n, tag) for n in list(mine)[:3]]

    with ThreadPoolExecutor(20) as pool:
        answers = [a for batch in pool.map(client, range(20)) for a in batch]
    codes = Counter(code for _, code in answers)
    assert codes == {202: 300, 200: 60}
    accepted = {msg_id for msg_id, code in answers if code == 202}
    wait_for(lambda: sum(stored_event_ids(sink_dir).values()) >= 300, 30, 0.2, "300 records")
    assert stored_event_ids(sink_dir) == Counter(accepted)
    report = verify_records(records_at(str(sink_dir)))
    assert report.ok and report.records == 300, report.details
    provenance = next(iter(records_at(str(sink_dir)))).record["provenance"]
    assert provenance["sourceType"] == "HTTP" and provenance["purpose"] == "case-4711"
    assert provenance["batchId"] and provenance["observedAt"]


def test_identical_concurrent_requests_are_accepted_once(
    env: dict[str, str], procs: ProcessGroup
) -> None:
    _, base = procs.start_web(env)
    body, headers = signed({"race": True}, f"race-{uuid.uuid4().hex}")
    start = threading.Barrier(20)

    def send(_: int) -> int:
        start.wait()
        url = f"{base}/v1/webhooks/acme"
        # A new connection each: keep-alive connections would hold up the web's shutdown.
        return requests.post(url, data=body, headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = Counter(pool.map(send, range(20)))
    assert codes[202] == 1
    assert set(codes) <= {202, 409, 200}


def test_rate_limits_hold_across_two_web_processes(
    env: dict[str, str], procs: ProcessGroup
) -> None:
    bases = [procs.start_web(env, workers=1)[1] for _ in range(2)]
    sessions = [requests.Session() for _ in bases]
    started = time.monotonic()
    codes: Counter[int] = Counter()
    for n in range(40):
        i = n % 2
        url = f"{bases[i]}/v1/webhooks/tiny"
        codes[sessions[i].post(url, json={"n": n}, timeout=10).status_code] += 1
    elapsed = time.monotonic() - started
    for session in sessions:
        session.close()
    assert codes[202] <= TINY_BURST + TINY_RATE * elapsed + 1
    assert codes[202] >= TINY_BURST and codes[429] > 0
    assert set(codes) == {202, 429}


def test_every_202_survives_kill_9_of_the_web(
    env: dict[str, str], procs: ProcessGroup, sink_dir: Path
) -> None:
    web, base = start_stack(procs, env)
    tag = uuid.uuid4().hex[:8]
    answers: list[tuple[str, int]] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        session = requests.Session()
        for n in range(worker * 1000, worker * 1000 + 100):
            answer = post_event(session, base, n, tag)
            with lock:
                answers.append(answer)
            if answer[1] == 0:
                return

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(client, w) for w in range(10)]
        wait_for(lambda: sum(code == 202 for _, code in answers) >= 80, 30, 0.01, "202s")
        # The master and its gevent workers: nothing of the web may flush anything on exit.
        web.signal_group(signal.SIGKILL)
        for future in futures:
            future.result()
    accepted = {msg_id for msg_id, code in answers if code == 202}
    assert len(accepted) >= 80

    _, base = procs.start_web(env)
    with requests.Session() as session:
        assert post_event(session, base, -1, tag)[1] == 202
    accepted.add(f"{tag}--1")
    wait_for(lambda: accepted <= set(stored_event_ids(sink_dir)), 30, 0.2, "accepted events")
    stored = stored_event_ids(sink_dir)
    assert max(stored.values()) == 1
    assert verify_records(records_at(str(sink_dir))).ok


def test_accepted_events_survive_a_lost_drain_message_and_a_dead_drain(
    env: dict[str, str], procs: ProcessGroup, sink_dir: Path, redis_client: Any
) -> None:
    from ingest.webhooks.drain import LEASE_MS, lease_key
    from ingest.webhooks.stream import GROUP, stream_key

    # No worker yet: accepted events wait in the source's stream.
    _, base = procs.start_web(env)
    tag = uuid.uuid4().hex[:8]
    with requests.Session() as session:
        answers = [post_event(session, base, n, tag) for n in range(40)]
    assert {code for _, code in answers} == {202}
    assert redis_client.xlen(stream_key("acme")) == 40
    # A drain that read 15 of them and died before storing them (they stay pending for it)...
    read = redis_client.xreadgroup(GROUP, "dead-drain", {stream_key("acme"): ">"}, count=15)
    assert len(read[0][1]) == 15
    # ...and a drain message that was lost on its way: its lease is held, nobody runs it.
    redis_client.set(lease_key("acme", 0), "lost-message", px=LEASE_MS)

    procs.start_worker(dict(env, INGEST_HTTP__REDELIVER_AFTER="2"))
    accepted = {msg_id for msg_id, _ in answers}
    wait_for(lambda: accepted <= set(stored_event_ids(sink_dir)), 60, 0.2, "every accepted event")
    assert stored_event_ids(sink_dir) == Counter(accepted)  # each once
    wait_for(lambda: redis_client.xlen(stream_key("acme")) == 0, 30, 0.2, "a drained stream")
    assert verify_records(records_at(str(sink_dir))).ok


def test_batches_are_stored_once_each_across_a_dead_drain(
    env: dict[str, str], procs: ProcessGroup, sink_dir: Path, redis_client: Any
) -> None:
    from ingest.webhooks.drain import GROUP
    from ingest.webhooks.stream import stream_key, waiting_key

    # No worker yet: each batch request's accepted events wait as one entry of the stream.
    _, base = procs.start_web(env)
    tag = uuid.uuid4().hex[:8]
    batches = [[{"id": f"{tag}-{b}-{i}", "n": i} for i in range(50)] for b in range(4)]
    batches[3][0] = batches[0][0]  # seen before: a duplicate, not stored twice
    with requests.Session() as session:
        for b, events in enumerate(batches):
            body = "\n".join(json.dumps(e) for e in events).encode()
            _, headers = signed({}, f"{tag}-batch-{b}")
            now = datetime.now(UTC)
            headers["webhook-signature"] = Webhook(SECRET).sign(
                f"{tag}-batch-{b}", now, body.decode()
            )
            headers["webhook-timestamp"] = str(int(now.timestamp()))
            headers["Content-Type"] = "application/x-ndjson"
            answer = session.post(
                f"{base}/v1/webhooks/acme/batch", data=body, headers=headers, timeout=10
            )
            assert answer.status_code == 202
    assert redis_client.xlen(stream_key("acme")) == 4
    assert int(redis_client.get(waiting_key("acme"))) == 199
    # A drain that read the first batch and died before storing it.
    read = redis_client.xreadgroup(GROUP, "dead-drain", {stream_key("acme"): ">"}, count=1)
    assert len(read[0][1]) == 1

    procs.start_worker(dict(env, INGEST_HTTP__REDELIVER_AFTER="2"))

    def stored() -> Counter[str]:
        return Counter(r.record["data"]["id"] for r in records_at(str(sink_dir)))

    accepted = {e["id"] for events in batches for e in events}
    wait_for(lambda: accepted <= set(stored()), 60, 0.2, "every accepted event")
    assert stored() == Counter(accepted)  # each once
    wait_for(lambda: redis_client.xlen(stream_key("acme")) == 0, 30, 0.2, "a drained stream")
    assert int(redis_client.get(waiting_key("acme"))) == 0
    assert verify_records(records_at(str(sink_dir))).ok


def raw_exchange(base: str, request: bytes, shut_write: bool = False) -> tuple[int, bytes]:
    """Send ``request`` bytes as they are; the status and body of the answer (read to EOF)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        if shut_write:  # the client goes away mid-body
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_chunked_bodies_through_gunicorn(env: dict[str, str], procs: ProcessGroup) -> None:
    """A well-formed chunked body is accepted; a malformed or truncated one is a 400 that says
    so (gunicorn's framing errors used to surface as a 503 asking for a retry)."""
    _, base = procs.start_web(env, workers=1)
    body, headers = signed({"n": 1, "tag": "chunked"}, "chunked-1")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    start = (
        "POST /v1/webhooks/acme HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        f"Transfer-Encoding: chunked\r\n{head}\r\n"
    ).encode()
    good = start + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    assert raw_exchange(base, good)[0] == 202

    status, answer = raw_exchange(base, start + b"zz\r\n" + body + b"\r\n0\r\n\r\n")
    assert status == 400 and "could not be read" in json.loads(answer)["error"]

    cut_short = start + b"%x\r\n" % (len(body) + 50) + body
    status, answer = raw_exchange(base, cut_short, shut_write=True)
    assert status == 400 and "could not be read" in json.loads(answer)["error"]


def test_a_stalled_body_is_408_and_its_connection_closed(
    env: dict[str, str], procs: ProcessGroup
) -> None:
    """A client that sends its headers and part of its body, then stalls, is answered 408
    once http.bodyTimeout has passed, and the server closes the connection (it used to wait
    for the rest for ever, holding the connection)."""
    _, base = procs.start_web(dict(env, INGEST_HTTP__BODY_TIMEOUT="1"), workers=1)
    body, headers = signed({"n": 1, "tag": "stalled"}, "stalled-1")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /v1/webhooks/acme HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body[:5]
    status, answer = raw_exchange(base, request)  # returns only once the server closes
    assert status == 408
    assert json.loads(answer)["error"] == "the request body did not arrive within 1 s"
