// Bursts over a small per-source rate limit: the limit holds and every refusal is a proper 429.
//
//   .venv/bin/k6 run -e BASE_URL=http://127.0.0.1:8000 -e SOURCE=limited -e SECRET=whsec_... \
//     -e LIMIT=50 -e BURST=20 -e RATE=200 -e DURATION=10s loadtests/k6/webhooks_burst.js
//
// LIMIT and BURST must match the source's configured rateLimit (run.py passes both). Requests
// come in bursts (ramping-arrival-rate between a trickle and RATE), so the bucket empties and
// refills. Expected answers: 202 with RateLimit headers, or 429 with Retry-After (whole seconds
// >= 1), RateLimit and RateLimit-Policy. Nothing else; and no more events accepted than the
// bucket could pay: LIMIT per second plus one BURST (plus a small allowance for the bucket
// refilling during k6's start and stop).
import http from "k6/http";
import { check } from "k6";
import { Counter, Rate } from "k6/metrics";
import { BASE_URL, seconds, signedHeaders, writeSummary } from "./lib.js";

const SOURCE = __ENV.SOURCE || "limited";
const LIMIT = parseFloat(__ENV.LIMIT || "50");
const BURST = parseInt(__ENV.BURST || "20", 10);
const RATE = parseInt(__ENV.RATE || "200", 10);
const DURATION = __ENV.DURATION || "10s";
const SECS = seconds(DURATION);
const URL = `${BASE_URL}/v1/webhooks/${SOURCE}`;

// Bursts: 1 s at RATE, 1 s at a trickle, repeated over DURATION.
const STAGES = [];
for (let t = 0; t < SECS; t += 2) {
  STAGES.push({ target: RATE, duration: "100ms" }, { target: RATE, duration: "900ms" });
  STAGES.push({ target: 1, duration: "100ms" }, { target: 1, duration: "900ms" });
}
const ALLOWED = Math.ceil(LIMIT * (SECS + 2) + BURST);

const eventsAccepted = new Counter("events_accepted");
const limited = new Counter("rate_limited");
const unexpected = new Rate("unexpected_status");

export const options = {
  discardResponseBodies: true,
  scenarios: {
    bursts: {
      executor: "ramping-arrival-rate",
      startRate: 1,
      timeUnit: "1s",
      stages: STAGES,
      preAllocatedVUs: parseInt(__ENV.VUS || "50", 10),
      maxVUs: parseInt(__ENV.MAX_VUS || "200", 10),
    },
  },
  thresholds: {
    unexpected_status: ["rate==0"],
    checks: ["rate==1"],
    rate_limited: ["count>0"], // the limit did engage
    events_accepted: [`count<=${ALLOWED}`], // and it held
  },
};

export default function () {
  const msgId = `burst_${__VU}_${__ITER}_${Math.random().toString(36).slice(2, 10)}`;
  const body = JSON.stringify({ type: "entity.observed", id: msgId, n: __ITER });
  const res = http.post(URL, body, { headers: signedHeaders(body, msgId) });
  const h = res.headers;
  const ok429 = res.status === 429;
  check(res, {
    "202 or 429": (r) => r.status === 202 || r.status === 429,
    "RateLimit header": () => !!h["Ratelimit"],
    "RateLimit-Policy header": () => !!h["Ratelimit-Policy"],
    "429: Retry-After is whole seconds >= 1": () =>
      !ok429 || (/^[0-9]+$/.test(h["Retry-After"] || "") && parseInt(h["Retry-After"], 10) >= 1),
  });
  unexpected.add(res.status !== 202 && !ok429);
  if (res.status === 202) eventsAccepted.add(1);
  if (ok429) limited.add(1);
}

export function handleSummary(data) {
  const count = (name) => (data.metrics[name] ? data.metrics[name].values.count : 0);
  return writeSummary(data, {
    source: SOURCE,
    limitPerSecond: LIMIT,
    burst: BURST,
    allowedAtMost: ALLOWED,
    eventsAccepted: count("events_accepted"),
    rateLimited: count("rate_limited"),
  });
}
