// Signed single-event webhooks at a constant arrival rate: achieved rate, errors, p95 accept time.
//
//   .venv/bin/k6 run -e BASE_URL=http://127.0.0.1:8000 -e SOURCE=load \
//     -e SECRET=whsec_... -e SCHEME=standard-webhooks -e RATE=3000 -e DURATION=20s \
//     loadtests/k6/webhooks_single.js
//
// SCHEME is standard-webhooks (SECRET is whsec_ + base64), hmac-sha256 (SECRET is the raw
// key, signature in X-Hub-Signature-256) or none. Every event is unique, so every 202 is new work.
import crypto from "k6/crypto";
import encoding from "k6/encoding";
import http from "k6/http";
import { check } from "k6";

const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8000";
const SOURCE = __ENV.SOURCE || "load";
const SCHEME = __ENV.SCHEME || "standard-webhooks";
const SECRET = __ENV.SECRET || "";
const RATE = parseInt(__ENV.RATE || "3000", 10);
const DURATION = __ENV.DURATION || "20s";
const URL = `${BASE_URL}/v1/webhooks/${SOURCE}`;
// Standard Webhooks keys are the base64 after "whsec_"; HMAC keys are used as given.
const STD_KEY = SCHEME === "standard-webhooks"
  ? encoding.b64decode(SECRET.replace(/^whsec_/, ""), "std")
  : null;

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
    "http_req_duration{status:202}": ["p(95)<25"],
    http_req_failed: ["rate<0.01"],
  },
  summaryTrendStats: ["avg", "med", "p(90)", "p(95)", "p(99)", "max"],
};

function signedHeaders(body, msgId) {
  const headers = { "Content-Type": "application/json" };
  if (SCHEME === "standard-webhooks") {
    const timestamp = Math.floor(Date.now() / 1000).toString();
    const mac = crypto.hmac("sha256", STD_KEY, `${msgId}.${timestamp}.${body}`, "base64");
    headers["webhook-id"] = msgId;
    headers["webhook-timestamp"] = timestamp;
    headers["webhook-signature"] = `v1,${mac}`;
  } else if (SCHEME === "hmac-sha256") {
    headers["X-Hub-Signature-256"] = `sha256=${crypto.hmac("sha256", SECRET, body, "hex")}`;
  }
  return headers;
}

export default function () {
  const msgId = `msg_${__VU}_${__ITER}_${Math.random().toString(36).slice(2, 10)}`;
  const body = JSON.stringify({
    type: "entity.observed",
    id: msgId,
    entity: { kind: "person", name: "Ada Lovelace", score: Math.random() },
    at: new Date().toISOString(),
  });
  const res = http.post(URL, body, { headers: signedHeaders(body, msgId) });
  check(res, { "accepted (202)": (r) => r.status === 202 });
}
