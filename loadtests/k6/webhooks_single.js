// Signed single-event webhooks at a constant arrival rate: achieved rate, errors, p95 accept time.
//
//   .venv/bin/k6 run -e BASE_URL=http://127.0.0.1:8000 -e SOURCE=load \
//     -e SECRET=whsec_... -e SCHEME=standard-webhooks -e RATE=3000 -e DURATION=20s \
//     loadtests/k6/webhooks_single.js
//
// SCHEME is standard-webhooks (SECRET is whsec_ + base64), hmac-sha256 (SECRET is the raw
// key, signature in X-Hub-Signature-256) or none. Every event is unique, so every 202 is new work.
//
// Thresholds: the seed's HTTP criterion (>= 1,000 events/s per pod) and the project target
// (>= 3,000 events/s with accept p95 <= 25 ms). The rate thresholds count accepted events
// against the configured DURATION rather than using the Counter's own rate, because k6 divides
// by the whole test time (start-up and graceful stop included), which would fail a run that
// did sustain the rate. They are absolute: a run at RATE < 3000 fails the project threshold.
import http from "k6/http";
import { check } from "k6";
import { Counter } from "k6/metrics";
import { BASE_URL, seconds, signedHeaders, writeSummary } from "./lib.js";

const SOURCE = __ENV.SOURCE || "load";
const RATE = parseInt(__ENV.RATE || "3000", 10);
const DURATION = __ENV.DURATION || "20s";
const SECS = seconds(DURATION);
const URL = `${BASE_URL}/v1/webhooks/${SOURCE}`;
// Event-rate bars checked as thresholds: the seed's 1,000/s and the project's 3,000/s. A run
// meant for something else (pre-storage latency at 1,000/s) passes MIN_RATES=1000.
const MIN_RATES = (__ENV.MIN_RATES || "1000,3000").split(",").filter(Boolean).map(Number);

const eventsAccepted = new Counter("events_accepted");

export const options = {
  discardResponseBodies: true,
  scenarios: {
    single: {
      executor: "constant-arrival-rate",
      rate: RATE,
      timeUnit: "1s",
      duration: DURATION,
      preAllocatedVUs: parseInt(__ENV.VUS || "200", 10),
      maxVUs: parseInt(__ENV.MAX_VUS || "600", 10),
    },
  },
  thresholds: {
    // project: accept p95 <= 25 ms (202 answers only: an error answered fast is no success)
    "http_req_duration{status:202}": ["p(95)<=25"],
    // "sustained" means fewer than 0.1% failed requests (same bar as webhooks_ramp.js)
    http_req_failed: ["rate<0.001"],
    // seed >= 1,000 events/s, project >= 3,000 events/s, over the configured duration
    events_accepted: MIN_RATES.map((r) => `count>=${Math.floor(r * SECS)}`),
    // iterations k6 could not start because every VU was waiting on a slow answer
    dropped_iterations: [`count<=${Math.ceil(RATE * SECS * 0.001)}`],
  },
  summaryTrendStats: ["avg", "med", "p(90)", "p(95)", "p(99)", "max"],
};

export default function () {
  const msgId = `msg_${__VU}_${__ITER}_${Math.random().toString(36).slice(2, 10)}`;
  const body = JSON.stringify({
    type: "entity.observed",
    id: msgId,
    entity: { kind: "person", name: "Ada Lovelace", score: Math.random() },
    at: new Date().toISOString(),
  });
  const res = http.post(URL, body, { headers: signedHeaders(body, msgId) });
  if (check(res, { "accepted (202)": (r) => r.status === 202 })) eventsAccepted.add(1);
}

export function handleSummary(data) {
  const accepted = data.metrics.events_accepted ? data.metrics.events_accepted.values.count : 0;
  return writeSummary(data, {
    source: SOURCE,
    targetRate: RATE,
    durationSeconds: SECS,
    eventsAccepted: accepted,
    eventsPerSecond: accepted / SECS,
  });
}
