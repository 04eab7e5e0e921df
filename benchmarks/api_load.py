"""API load: concurrent job submissions and status reads against a real ``autoft serve --no-runner``.

Starts a server on loopback (SQLite by default; ``--database-url`` or ``$AUTOFT_BENCH_DATABASE_URL`` for
PostgreSQL) and creates an API key. Two modes:

* default: ``--clients`` Python threads send a bounded number of requests each; prints p50 / p99 / max latency
  per operation and the throughput (a correctness-under-concurrency check, used by the reliability suite).

      python -m benchmarks.api_load [--clients 16] [--requests 50] [--database-url URL]

* ``--wrk``: a real load generator (``wrk``, from a separate process) at ``--connections`` connections for
  ``--duration`` against ``/healthz`` (the floor: the same process, no database), ``GET /v1/jobs/{id}``,
  ``GET /v1/jobs?limit=20`` and ``POST /v1/jobs`` (a demo spec, no Idempotency-Key, so each one queues a new
  job), each after a short unmeasured ``--warmup`` run. Prints one table: each route's req/s, its fraction of
  the ``/healthz`` req/s of the same run, p50, p99 and p99 over the ``/healthz`` p99. With ``--runs N`` the
  routes are measured N times in turn against the same server and the table shows the medians (each
  fraction is taken within its run first), plus each run's fraction. Each run is a tenant of its own that
  first submits ``--jobs`` jobs (50), so every run lists a full page and counts the same number of jobs. Rate limits are off for the run
  (``AUTOFT_RATE_LIMIT_PER_SECOND=0``).

      python -m benchmarks.api_load --wrk [--workers N] [--threads 2] [--connections 50] [--duration 15s]
                                          [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=50, help="requests per client (half submits, half reads)")
    ap.add_argument(
        "--database-url", default=os.environ.get("AUTOFT_BENCH_DATABASE_URL") or None,
        help="job store of the server (default: $AUTOFT_BENCH_DATABASE_URL, else SQLite in a temp folder)",
    )  # fmt: skip
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--wrk", action="store_true", help="drive the routes with wrk and print the ratio table")
    ap.add_argument("--workers", type=int, default=None, help="autoft serve --workers (default: its own)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (-t)")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections (-c)")
    ap.add_argument("--duration", default="15s", help="wrk duration per route (-d)")
    ap.add_argument("--warmup", default="3s", help="wrk run per route before the measured one (0s: none)")
    ap.add_argument("--runs", type=int, default=1, help="measure every route this many times (medians)")
    ap.add_argument("--jobs", type=int, default=50, help="jobs each --wrk run submits before it measures")
    ap.add_argument("--json", type=Path, default=None, help="also write the --wrk results to this file")
    args = ap.parse_args()
    if args.wrk and shutil.which("wrk") is None:
        ap.error("--wrk needs the wrk load generator on PATH (Debian/Ubuntu: apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="autoft-load-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFT_")}
    env.update(AUTOFT_DATA_DIR=str(tmp), AUTOFT_ENVIRONMENT="test")
    if args.database_url:
        env["AUTOFT_DATABASE_URL"] = args.database_url
    if args.wrk:
        env["AUTOFT_RATE_LIMIT_PER_SECOND"] = "0"  # measure the service, not its per-key limiter
    cli = [sys.executable, "-m", "autoft_service.cli"]

    def new_key(tenant: str) -> str:
        out = subprocess.run([*cli, "keys", "create", "--tenant", tenant, "--name", "bench"], env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return out.strip().splitlines()[-1]

    key = new_key("load")
    # --wrk: every run as a tenant of its own, so each one lists and counts the same jobs
    run_keys = [key, *(new_key(f"load{i}") for i in range(1, max(1, args.runs)))] if args.wrk else []
    serve = [*cli, "serve", "--no-runner", "--port", str(args.port)]
    if args.workers is not None:
        serve += ["--workers", str(args.workers)]
    server = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.port}"
    try:
        _wait_healthy(base, server)
        if args.wrk:
            runs = [run_wrk(args, base, k) for k in run_keys]
        else:
            results, wall = run_clients(args, base, key)
    finally:
        server.terminate()
        server.wait(30)
    if args.wrk:
        print_wrk(args, runs)
        if args.json is not None:
            args.json.write_text(json.dumps(runs, indent=2))
        return
    print_clients(args, results, wall)


def _wait_healthy(base: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"autoft serve exited with status {server.returncode} before it answered")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("autoft serve did not answer /healthz within 120 s")


def run_clients(args: argparse.Namespace, base: str, key: str) -> tuple[list[dict[str, list[float]]], float]:
    headers = {"Authorization": f"Bearer {key}"}
    spec = {"name": "load", "task": {"name": "digits-shift"}}

    def client(i: int) -> dict[str, list[float]]:
        lat: dict[str, list[float]] = {"POST /v1/jobs": [], "GET /v1/jobs/{id}": [], "GET /v1/jobs": []}
        ids: list[str] = []
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            for n in range(args.requests):
                t0 = time.perf_counter()
                if n % 2 == 0:
                    r = c.post("/v1/jobs", json={**spec, "name": f"load-{i}-{n}"})
                    ids.append(r.json()["id"])
                    op = "POST /v1/jobs"
                elif n % 4 == 1:
                    r = c.get(f"/v1/jobs/{ids[-1]}")
                    op = "GET /v1/jobs/{id}"
                else:
                    r = c.get("/v1/jobs", params={"limit": 20})
                    op = "GET /v1/jobs"
                r.raise_for_status()
                lat[op].append((time.perf_counter() - t0) * 1000)
        return lat

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(client, range(args.clients)))
    wall = time.perf_counter() - t0
    return results, wall


def print_clients(args: argparse.Namespace, results: list[dict[str, list[float]]], wall: float) -> None:
    table = Table(
        title=f"{args.clients} clients x {args.requests} requests, {'PostgreSQL' if args.database_url else 'SQLite'}"
    )
    for col in ("operation", "n", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right" if col != "operation" else "left")
    total = 0
    for op in results[0]:
        xs = [x for r in results for x in r[op]]
        total += len(xs)
        table.add_row(
            op, str(len(xs)), f"{statistics.median(xs):.1f}", f"{_pct(xs, 0.99):.1f}", f"{max(xs):.1f}"
        )
    console = Console(width=120)
    console.print(table)
    console.print(f"{total} requests in {wall:.1f}s: {total / wall:.0f} req/s, 0 errors")


# wrk mode ---------------------------------------------------------------------------------------------------
_POST_SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"name":"wrk-%d-%d","task":{"name":"digits-shift"}}', tid or 0, n)
  return wrk.format("POST", "/v1/jobs", nil, body)
end
"""
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(output: str) -> dict[str, float]:
    """req/s, p50 / p99 latency (ms) and the non-2xx plus socket-error count of one ``wrk --latency`` run."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise ValueError(f"could not parse wrk output:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(int(x) for x in sock.groups()) if sock else 0
    return {"rps": float(rps.group(1)), "p50_ms": _ms(p50.group(1)), "p99_ms": _ms(p99.group(1)),
            "errors": errors}  # fmt: skip


def run_wrk(args: argparse.Namespace, base: str, key: str) -> list[dict[str, object]]:
    """Run wrk against each route in turn (``/healthz`` first: the floor) and return one row per route."""
    auth = f"Authorization: Bearer {key}"
    r = httpx.post(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                   json={"name": "wrk-target", "task": {"name": "digits-shift"}}, timeout=30)  # fmt: skip
    r.raise_for_status()
    job_id = r.json()["id"]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        for i in range(args.jobs - 1):  # the job list shows a full page
            c.post(
                "/v1/jobs", json={"name": f"wrk-seed-{i}", "task": {"name": "digits-shift"}}
            ).raise_for_status()
    script = Path(tempfile.mkdtemp(prefix="autoft-wrk-")) / "post_job.lua"
    script.write_text(_POST_SCRIPT)
    routes: list[tuple[str, list[str]]] = [
        ("GET /healthz", [f"{base}/healthz"]),
        ("GET /v1/jobs/{id}", ["-H", auth, f"{base}/v1/jobs/{job_id}"]),
        ("GET /v1/jobs?limit=20", ["-H", auth, f"{base}/v1/jobs?limit=20"]),
        ("POST /v1/jobs", ["-H", auth, "-H", "Content-Type: application/json", "-s", str(script), base]),
    ]
    rows: list[dict[str, object]] = []
    for route, extra in routes:
        for duration in ([args.warmup] if args.warmup.strip("0smh") else []) + [args.duration]:
            cmd = ["wrk", "--latency", "-t", str(args.threads), "-c", str(args.connections), "-d", duration,
                   "--timeout", "10s", *extra]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append({"route": route, **parse_wrk(res.stdout)})
    return rows


def print_wrk(args: argparse.Namespace, runs: list[list[dict[str, object]]]) -> None:
    """One row per route: medians over the runs of req/s, of its fraction of the same run's ``/healthz``
    req/s, of p50 / p99 and of p99 over the same run's ``/healthz`` p99; errors summed."""
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    table = Table(
        title=f"wrk -t{args.threads} -c{args.connections} -d{args.duration}, "
        f"{'PostgreSQL' if args.database_url else 'SQLite'}, workers {args.workers or 'default'}, "
        f"rate limits off, {len(runs)} run(s) (medians), load average {load}"
    )
    cols = ["route", "req/s", "× healthz", "p50 ms", "p99 ms", "p99 / healthz p99", "errors"]
    if len(runs) > 1:
        cols.insert(3, "× healthz per run")
    for col in cols:
        table.add_column(col, justify="left" if col == "route" else "right")

    def num(row: dict[str, object], key: str) -> float:
        return float(row[key])  # type: ignore[arg-type]

    for i, row in enumerate(runs[0]):
        per_run = [run[i] for run in runs]
        ratios = [num(run[i], "rps") / num(run[0], "rps") for run in runs]
        p99_ratios = [num(run[i], "p99_ms") / num(run[0], "p99_ms") for run in runs]
        cells = [
            str(row["route"]), f"{statistics.median(num(r, 'rps') for r in per_run):.0f}",
            f"{statistics.median(ratios):.2f}",
            f"{statistics.median(num(r, 'p50_ms') for r in per_run):.1f}",
            f"{statistics.median(num(r, 'p99_ms') for r in per_run):.1f}",
            f"{statistics.median(p99_ratios):.2f}", str(sum(int(num(r, 'errors')) for r in per_run)),
        ]  # fmt: skip
        if len(runs) > 1:
            cells.insert(3, " ".join(f"{x:.2f}" for x in ratios))
        table.add_row(*cells)
    console = Console(width=160)
    console.print(table)
    console.print(
        "× healthz: the route's throughput over GET /healthz (same process, no database) in the same run; "
        "errors: non-2xx answers plus socket errors (should be 0)."
    )


if __name__ == "__main__":
    main()
