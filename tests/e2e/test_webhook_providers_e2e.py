"""Provider presets through the Procfile's real `web` (gunicorn/gevent) and `worker`: requests
signed by Stripe's, Twilio's and Slack's own libraries and GitHub's scheme, over real HTTP,
into the sink with provenance."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from slack_sdk.signature import SignatureVerifier
from stripe import WebhookSignature
from twilio.request_validator import RequestValidator

from ingest.hashing import canonical_json, sha256_hex
from ingest.provenance.verify import records_at, verify_records
from tests.support.processes import ProcessGroup
from tests.support.services import wait_for
from tests.support.webhook_stack import start_stack

pytestmark = pytest.mark.e2e

STRIPE_SECRET, GITHUB_SECRET = "whsec_e2e_stripe", "e2e-github-secret"
SLACK_SECRET, TWILIO_TOKEN = "e2e-slack-signing-secret", "e2e-twilio-auth-token"
PUBLIC_URL = "https://hooks.example.com"  # what Twilio sees; the test reaches 127.0.0.1
SOURCES = {
    "stripe": {"provider": "stripe", "signature": {"secrets": [STRIPE_SECRET]}, "purpose": "p"},
    "github": {"provider": "github", "signature": {"secrets": [GITHUB_SECRET]}, "purpose": "p"},
    "slack": {"provider": "slack", "signature": {"secrets": [SLACK_SECRET]}, "purpose": "p"},
    "twilio": {
        "provider": "twilio",
        "signature": {"secrets": [TWILIO_TOKEN]},
        "publicUrl": PUBLIC_URL,
        "purpose": "sms",
    },
}


def test_provider_events_over_http_are_stored_with_provenance(
    stack_env: dict[str, str], procs: ProcessGroup, sink_dir: Path
) -> None:
    env = dict(stack_env, INGEST_HTTP__SOURCES=json.dumps(SOURCES))
    _, base = start_stack(procs, env)
    run = uuid.uuid4().hex[:8]
    answers: dict[str, list[int]] = {}

    stripe_body = json.dumps({"id": f"evt_{run}", "type": "invoice.paid", "created": 1}).encode()
    for attempt in range(2):  # Stripe's retry is signed anew: the event id makes it a duplicate
        header = WebhookSignature.generate_signature_header(
            stripe_body.decode(), STRIPE_SECRET, timestamp=int(time.time()) + attempt
        )
        headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
        answer = requests.post(f"{base}/v1/webhooks/stripe", data=stripe_body, headers=headers)
        answers.setdefault("stripe", []).append(answer.status_code)

    github_body = json.dumps({"after": run, "ref": "refs/heads/main"}).encode()
    digest = hmac.new(GITHUB_SECRET.encode(), github_body, hashlib.sha256).hexdigest()
    headers = {
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Delivery": f"delivery-{run}",
        "Content-Type": "application/json",
    }
    answer = requests.post(f"{base}/v1/webhooks/github", data=github_body, headers=headers)
    answers["github"] = [answer.status_code]

    fields = {"MessageSid": f"SM{run}", "Body": "Hi & bye: 100%", "From": "+14158675310"}
    path = "/v1/webhooks/twilio?tenant=acme&note=a%20b"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path, fields)
    headers = {
        "X-Twilio-Signature": signature,
        "I-Twilio-Idempotency-Token": f"tok-{run}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    answer = requests.post(base + path, data=urlencode(fields), headers=headers)
    answers["twilio"] = [answer.status_code]
    forwarded = dict(headers, **{"X-Forwarded-Host": "hooks.example.com"})
    answer = requests.post(
        base + path.replace("acme", "other"), data=urlencode(fields), headers=forwarded
    )
    answers["twilio"].append(answer.status_code)

    challenge = json.dumps({"type": "url_verification", "challenge": run}).encode()
    stamp = str(int(time.time()))
    slack_sig = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=stamp, body=challenge)
    headers = {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": str(slack_sig),
        "Content-Type": "application/json",
    }
    answer = requests.post(f"{base}/v1/webhooks/slack", data=challenge, headers=headers)
    assert (answer.status_code, answer.json()) == (200, {"challenge": run})

    assert answers == {"stripe": [202, 200], "github": [202], "twilio": [202, 401]}
    wait_for(lambda: len(list(records_at(str(sink_dir)))) >= 3, 30, 0.2, "three records")
    report = verify_records(records_at(str(sink_dir)))
    assert report.ok and report.records == 3, report.details
    by_source = {r.record["provenance"]["sourceId"]: r.record for r in records_at(str(sink_dir))}
    assert set(by_source) == {"stripe", "github", "twilio"}  # the handshake is not stored
    assert by_source["stripe"]["provenance"]["eventId"] == f"evt_{run}"
    assert by_source["github"]["provenance"]["eventId"] == f"delivery-{run}"
    twilio = by_source["twilio"]
    assert twilio["data"] == fields
    assert twilio["provenance"]["eventId"] == f"tok-{run}"
    assert twilio["provenance"]["contentHash"] == sha256_hex(canonical_json(fields))
