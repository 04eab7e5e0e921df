"""API load: concurrent job submissions and status reads against a real ``autoft serve --no-runner``.

Starts a server on loopback (SQLite by default; ``--database-url`` for PostgreSQL), creates an API key, then
runs ``--clients`` threads for a bounded number of requests each, and prints p50 / p99 / max latency per
operation and the throughput.

    python -m benchmarks.api_load [--clients 16] [--requests 50] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--port", type=int, default=8799)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="autoft-load-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFT_")}
    env.update(AUTOFT_DATA_DIR=str(tmp), AUTOFT_ENVIRONMENT="test")
    if args.database_url:
        env["AUTOFT_DATABASE_URL"] = args.database_url
    cli = [sys.executable, "-m", "autoft_service.cli"]
    key = subprocess.run([*cli, "keys", "create", "--tenant", "load", "--name", "bench"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]  # fmt: skip
    server = subprocess.Popen([*cli, "serve", "--no-runner", "--port", str(args.port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
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
    finally:
        server.terminate()
        server.wait(30)
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


if __name__ == "__main__":
    main()
