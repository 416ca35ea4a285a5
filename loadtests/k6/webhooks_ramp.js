// Ramping arrival rate of signed single events: the highest rate sustained with < 0.1% errors.
//
//   .venv/bin/k6 run -e BASE_URL=http://127.0.0.1:8000 -e SOURCE=ramp -e SECRET=whsec_... \
//     -e RATES=500,1000,2000,3000,4000 -e HOLD=10s -e RAMP=2s loadtests/k6/webhooks_ramp.js
//
// Each level of RATES is reached in RAMP, then held for HOLD. Requests made during a hold are
// tagged with its level (stage), during a ramp with "ramp"; handleSummary computes per level
// the achieved rate (requests answered in the hold / HOLD), the error rate and p95, and names
// the highest level that it and every level below it sustained: errors < 0.1% and at least
// 97% of the level's rate achieved (k6 drops iterations when answers are too slow to keep up).
import http from "k6/http";
import exec from "k6/execution";
import { Counter, Rate, Trend } from "k6/metrics";
import { BASE_URL, seconds, signedHeaders, writeSummary } from "./lib.js";

const SOURCE = __ENV.SOURCE || "ramp";
const RATES = (__ENV.RATES || "500,1000,2000,3000,4000").split(",").map((r) => parseInt(r, 10));
const HOLD = seconds(__ENV.HOLD || "10s");
const RAMP = seconds(__ENV.RAMP || "2s");
const MAX_ERROR_RATE = 0.001;
const MIN_ACHIEVED = 0.97;
const URL = `${BASE_URL}/v1/webhooks/${SOURCE}`;

const stageReqs = new Counter("stage_reqs");
const stageErrors = new Rate("stage_errors");
const stageMs = new Trend("stage_ms", true);
const eventsAccepted = new Counter("events_accepted"); // every phase: the sink check uses it

const stages = [];
const thresholds = {};
for (const rate of RATES) {
  stages.push({ target: rate, duration: `${RAMP}s` }, { target: rate, duration: `${HOLD}s` });
  // Thresholds that always pass: they make k6 keep (and report) one sub-metric per level.
  thresholds[`stage_reqs{stage:${rate}}`] = ["count>=0"];
  thresholds[`stage_errors{stage:${rate}}`] = ["rate>=0"];
  thresholds[`stage_ms{stage:${rate}}`] = ["p(95)>=0"];
}

export const options = {
  discardResponseBodies: true,
  scenarios: {
    ramp: {
      executor: "ramping-arrival-rate",
      startRate: Math.min(RATES[0], 50),
      timeUnit: "1s",
      stages,
      preAllocatedVUs: parseInt(__ENV.VUS || "200", 10),
      maxVUs: parseInt(__ENV.MAX_VUS || "800", 10),
    },
  },
  thresholds,
  summaryTrendStats: ["avg", "med", "p(95)", "p(99)", "max"],
};

// The level whose hold the scenario is in now, or "ramp".
function currentStage() {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  let t = 0;
  for (const rate of RATES) {
    t += RAMP;
    if (elapsed < t) return "ramp";
    t += HOLD;
    if (elapsed < t) return String(rate);
  }
  return "ramp";
}

export default function () {
  const stage = currentStage();
  const msgId = `ramp_${__VU}_${__ITER}_${Math.random().toString(36).slice(2, 10)}`;
  const body = JSON.stringify({ type: "entity.observed", id: msgId, at: Date.now() });
  const res = http.post(URL, body, { headers: signedHeaders(body, msgId), tags: { stage } });
  if (res.status === 202) eventsAccepted.add(1);
  if (stage === "ramp") return;
  const tags = { stage };
  stageReqs.add(1, tags);
  stageErrors.add(res.status !== 202, tags);
  if (res.status === 202) stageMs.add(res.timings.duration, tags);
}

export function handleSummary(data) {
  const m = (name) => data.metrics[name] || { values: {} };
  const table = [];
  let best = 0;
  let stillSustained = true;
  for (const rate of RATES) {
    const count = m(`stage_reqs{stage:${rate}}`).values.count || 0;
    const errors = m(`stage_errors{stage:${rate}}`).values.rate || 0;
    const p95 = m(`stage_ms{stage:${rate}}`).values["p(95)"];
    const achieved = count / HOLD;
    const sustained = count > 0 && errors < MAX_ERROR_RATE && achieved >= MIN_ACHIEVED * rate;
    if (sustained && stillSustained) best = rate;
    stillSustained = stillSustained && sustained;
    table.push({ target: rate, achieved, errorRate: errors, p95Ms: p95, sustained });
  }
  const extra = {
    source: SOURCE,
    holdSeconds: HOLD,
    stages: table,
    bestSustainedRate: best,
    eventsAccepted: m("events_accepted").values.count || 0,
  };
  return writeSummary(data, extra);
}
