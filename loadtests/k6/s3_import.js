// One S3/CSV import end to end: trigger with POST /admin/imports, poll until it finishes.
//
//   .venv/bin/k6 run -e BASE_URL=http://127.0.0.1:8000 -e ADMIN_TOKEN=... \
//     -e URI=s3://bench/data/ -e SCHEMA=events_wide -e TIMEOUT=600 loadtests/k6/s3_import.js
//
// The objects under URI must exist already (loadtests/run.py generates and uploads a CSV of
// >= 250 MB by default). import_mbps is bytesTotal / the time from the trigger to the poll
// that saw "succeeded" or "failed" (POLL seconds of resolution); import_server_mbps uses the
// import's own startedAt/finishedAt. Thresholds: seed >= 50 MB/s per worker node, project
// >= 150 MB/s, and the import succeeded with every byte processed.
// The admin endpoints are rate limited per client (http.adminRateLimit, 60/minute by
// default): keep POLL * 60 under that limit, or raise it for the test as run.py does.
import http from "k6/http";
import { check, sleep } from "k6";
import { Gauge, Rate, Trend } from "k6/metrics";
import { BASE_URL, writeSummary } from "./lib.js";

const TOKEN = __ENV.ADMIN_TOKEN || "";
const URI = __ENV.URI || "s3://bench/data/";
const SCHEMA = __ENV.SCHEMA || "events_wide";
const TIMEOUT = parseFloat(__ENV.TIMEOUT || "600");
const POLL = parseFloat(__ENV.POLL || "0.25");
const HEADERS = { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" };

const mbps = new Trend("import_mbps");
const serverMbps = new Trend("import_server_mbps");
const mbpsGauge = new Gauge("import_mbps_gauge");
const succeeded = new Rate("import_succeeded");

export const options = {
  scenarios: {
    import: {
      executor: "shared-iterations",
      vus: 1,
      iterations: 1,
      maxDuration: `${Math.ceil(TIMEOUT + 30)}s`, // bounded even if the import never finishes
    },
  },
  thresholds: {
    import_succeeded: ["rate==1"],
    import_mbps: ["avg>=50", "avg>=150"],
  },
};

// The trigger is in setup(), so its id reaches handleSummary (data.setup_data) and the runner.
export function setup() {
  const started = Date.now();
  const res = http.post(
    `${BASE_URL}/admin/imports`,
    JSON.stringify({ uri: URI, schema: SCHEMA, purpose: "load-test", classification: "internal" }),
    { headers: HEADERS },
  );
  check(res, { "import queued (202)": (r) => r.status === 202 });
  if (res.status !== 202) {
    console.error(`POST /admin/imports answered ${res.status}: ${res.body}`);
    return { id: null, started };
  }
  return { id: res.json("importId"), started };
}

export default function (data) {
  if (!data.id) {
    succeeded.add(false);
    return;
  }
  let state = {};
  while ((Date.now() - data.started) / 1000 < TIMEOUT) {
    sleep(POLL);
    const poll = http.get(`${BASE_URL}/admin/imports/${data.id}`, {
      headers: HEADERS,
      tags: { name: "GET /admin/imports/<id>" },
    });
    if (poll.status !== 200) continue; // a transient 429/503 is retried at the next poll
    state = poll.json();
    if (state.status === "succeeded" || state.status === "failed") break;
  }
  const elapsed = (Date.now() - data.started) / 1000;
  const bytes = state.bytesTotal || 0;
  const ok = state.status === "succeeded" && state.bytesProcessed === bytes && bytes > 0;
  check(state, { "import succeeded, every byte processed": () => ok });
  succeeded.add(ok);
  const rate = bytes / 1e6 / elapsed;
  mbps.add(rate);
  mbpsGauge.add(rate);
  if (state.startedAt && state.finishedAt) {
    const serverSecs = (Date.parse(state.finishedAt) - Date.parse(state.startedAt)) / 1000;
    if (serverSecs > 0) serverMbps.add(bytes / 1e6 / serverSecs);
  }
}

export function handleSummary(data) {
  const v = (name, key) => (data.metrics[name] ? data.metrics[name].values[key] : null);
  return writeSummary(data, {
    uri: URI,
    schema: SCHEMA,
    importId: data.setup_data ? data.setup_data.id : null,
    mbps: v("import_mbps", "avg"),
    serverMbps: v("import_server_mbps", "avg"),
    succeeded: v("import_succeeded", "rate") === 1,
  });
}
