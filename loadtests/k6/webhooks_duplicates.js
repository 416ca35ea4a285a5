// Duplicate storm: many VUs send the same few idempotency keys, each with its own fixed body.
//
//   .venv/bin/k6 run -e BASE_URL=http://127.0.0.1:8000 -e SOURCE=dupes -e SECRET=whsec_... \
//     -e KEYS=5 -e RATE=500 -e DURATION=10s loadtests/k6/webhooks_duplicates.js
//
// Contract: the first request of a key is 202, later ones 200 "duplicate" once it is
// published, 409 while it is still in flight. Anything else (422 would mean the body differed,
// 5xx a server failure under contention) is a failure. Exactly KEYS events are accepted per
// run: the keys carry a per-run nonce from setup(), so a second run does not meet the first.
import http from "k6/http";
import { check } from "k6";
import { Counter, Rate } from "k6/metrics";
import { BASE_URL, runNonce, signedHeaders, writeSummary } from "./lib.js";

const SOURCE = __ENV.SOURCE || "dupes";
const KEYS = parseInt(__ENV.KEYS || "5", 10);
const RATE = parseInt(__ENV.RATE || "500", 10);
const DURATION = __ENV.DURATION || "10s";
const URL = `${BASE_URL}/v1/webhooks/${SOURCE}`;

const eventsAccepted = new Counter("events_accepted");
const duplicates = new Counter("answered_duplicate");
const inFlight = new Counter("answered_in_flight");
const unexpected = new Rate("unexpected_status");
const serverErrors = new Counter("server_errors");

export const options = {
  scenarios: {
    storm: {
      executor: "constant-arrival-rate",
      rate: RATE,
      timeUnit: "1s",
      duration: DURATION,
      preAllocatedVUs: parseInt(__ENV.VUS || "100", 10),
      maxVUs: parseInt(__ENV.MAX_VUS || "300", 10),
    },
  },
  thresholds: {
    unexpected_status: ["rate==0"],
    server_errors: ["count==0"],
    // one 202 per key, never more (a second 202 would mean a key was accepted twice)
    events_accepted: [`count==${KEYS}`],
    checks: ["rate==1"],
  },
  summaryTrendStats: ["avg", "med", "p(95)", "p(99)", "max"],
};

export function setup() {
  return { nonce: runNonce() };
}

export default function (data) {
  const k = Math.floor(Math.random() * KEYS);
  const msgId = `dup_${data.nonce}_${k}`;
  // The body depends on the key only: a repeat is the same request, never a conflict (422).
  const body = JSON.stringify({
    type: "entity.observed",
    id: msgId,
    entity: { kind: "organisation", name: `Org ${k}` },
  });
  const res = http.post(URL, body, { headers: signedHeaders(body, msgId) });
  const expected = res.status === 200 || res.status === 202 || res.status === 409;
  check(res, {
    "200, 202 or 409": () => expected,
    "409 carries Retry-After": (r) => r.status !== 409 || !!r.headers["Retry-After"],
  });
  unexpected.add(!expected);
  if (res.status >= 500) serverErrors.add(1);
  if (res.status === 202) eventsAccepted.add(1);
  if (res.status === 200) duplicates.add(1);
  if (res.status === 409) inFlight.add(1);
}

export function handleSummary(data) {
  const count = (name) => (data.metrics[name] ? data.metrics[name].values.count : 0);
  return writeSummary(data, {
    source: SOURCE,
    keys: KEYS,
    eventsAccepted: count("events_accepted"),
    duplicates: count("answered_duplicate"),
    inFlight: count("answered_in_flight"),
  });
}
