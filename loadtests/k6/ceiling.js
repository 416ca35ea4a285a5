// The machine's ceiling for the webhook benchmark: k6 against a gunicorn/gevent app that
// does nothing (loadtests/noop_app.py), driven by loadtests/ceiling.py. Same request shape as
// webhooks_single.js (a ~170-byte JSON body with Standard Webhooks headers), but the headers
// are computed once: the figure is what k6 plus gunicorn cost before any application code.
//
//   MODE=closed VUS=32  : as many requests as VUS loops can send (perf-facts.md's setup)
//   MODE=open RATE=3000 : constant arrival rate, as webhooks_single.js
import http from "k6/http";
import { Counter } from "k6/metrics";

const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8000";
const MODE = __ENV.MODE || "closed";
const DURATION = __ENV.DURATION || "10s";
const URL = `${BASE_URL}/v1/webhooks/load`;
const answered = new Counter("answered_202");

const scenario = MODE === "open"
  ? {
    executor: "constant-arrival-rate",
    rate: parseInt(__ENV.RATE || "3000", 10),
    timeUnit: "1s",
    duration: DURATION,
    preAllocatedVUs: parseInt(__ENV.VUS || "200", 10),
    maxVUs: parseInt(__ENV.MAX_VUS || "600", 10),
  }
  : { executor: "constant-vus", vus: parseInt(__ENV.VUS || "32", 10), duration: DURATION };

export const options = {
  discardResponseBodies: true,
  scenarios: { ceiling: scenario },
  summaryTrendStats: ["avg", "med", "p(95)", "p(99)", "max"],
};

const BODY = JSON.stringify({
  type: "entity.observed",
  id: "msg_ceiling",
  entity: { kind: "person", name: "Ada Lovelace", score: 0.5 },
  at: "2026-11-25T00:00:00.000Z",
});
const HEADERS = {
  "Content-Type": "application/json",
  "webhook-id": "msg_ceiling",
  "webhook-timestamp": "1764028800",
  "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
};

export default function () {
  const res = http.post(URL, BODY, { headers: HEADERS });
  if (res.status === 202) answered.add(1);
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY_JSON || "/dev/stdout"]: JSON.stringify(data.metrics) };
}
