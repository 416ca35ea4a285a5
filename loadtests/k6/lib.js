// Shared helpers of the k6 scripts: request signing, duration parsing and the summary file.
//
// Every script writes its end-of-test data as JSON to SUMMARY_JSON (when set) through
// writeSummary(), so loadtests/run.py reads one format whatever the script computed, and
// prints a short text summary instead of k6's default one (handleSummary replaces it).
import crypto from "k6/crypto";
import encoding from "k6/encoding";

export const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8000";
export const SCHEME = __ENV.SCHEME || "standard-webhooks";
export const SECRET = __ENV.SECRET || "";

// Standard Webhooks keys are the base64 after "whsec_"; HMAC keys are used as given.
// Decoded once per VU (init context), not per request.
const STD_KEY = SCHEME === "standard-webhooks" && SECRET
  ? encoding.b64decode(SECRET.replace(/^whsec_/, ""), "std")
  : null;

// Headers that sign `body` for the configured scheme. For standard-webhooks, `msgId` is the
// webhook-id, which is also the request's idempotency key (contract: first present of
// Idempotency-Key, webhook-id, event field, content hash).
export function signedHeaders(body, msgId, contentType) {
  const headers = { "Content-Type": contentType || "application/json" };
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

// "20s", "2m", "1m30s", "500ms" -> seconds (k6 durations as the scripts accept them).
export function seconds(duration) {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let match;
  let matched = false;
  while ((match = re.exec(String(duration))) !== null) {
    matched = true;
    const n = parseFloat(match[1]);
    total += { ms: n / 1000, s: n, m: n * 60, h: n * 3600 }[match[2]];
  }
  if (!matched) throw new Error(`cannot parse duration ${duration}`);
  return total;
}

// A token unique to this test run, from setup(): keys of one run never meet another run's.
export function runNonce() {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

function fmt(value) {
  if (typeof value !== "number") return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(2);
}

// The end-of-test output: {SUMMARY_JSON: {...data, extra}, stdout: a short text summary}.
// `extra` carries figures a script computed itself (achieved rates, per-stage tables).
export function writeSummary(data, extra) {
  const lines = [];
  const failed = [];
  for (const [name, metric] of Object.entries(data.metrics)) {
    const values = Object.entries(metric.values)
      .filter(([k]) => ["count", "rate", "avg", "p(95)", "p(99)", "max", "value"].includes(k))
      .map(([k, v]) => `${k}=${fmt(v)}`)
      .join(" ");
    lines.push(`  ${name}: ${values}`);
    for (const [expr, result] of Object.entries(metric.thresholds || {})) {
      const mark = result.ok ? "ok  " : "FAIL";
      lines.push(`    ${mark} ${expr}`);
      if (!result.ok) failed.push(`${name} ${expr}`);
    }
  }
  if (extra) lines.push(`  extra: ${JSON.stringify(extra)}`);
  lines.push(failed.length ? `thresholds failed: ${failed.join("; ")}` : "all thresholds ok");
  const out = { stdout: lines.join("\n") + "\n" };
  if (__ENV.SUMMARY_JSON) {
    out[__ENV.SUMMARY_JSON] = JSON.stringify({ ...data, extra: extra || {} }, null, 1);
  }
  return out;
}
