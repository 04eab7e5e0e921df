"""Prometheus metrics of one app, in its own ``CollectorRegistry``.

Job and trial gauges and the duration histograms are computed from the job store at scrape time, so they are
right whichever process (API, runner) did the work and survive restarts. HTTP request counts and latencies
are observed in this process by :class:`RequestMetrics`.

Series: ``autoft_jobs_by_state{state}``, ``autoft_trials_by_state{state}``,
``autoft_trial_duration_seconds`` and ``autoft_queue_wait_seconds`` (histograms), ``autoft_store_up``,
``autoft_http_requests_total{method,route,status}``, ``autoft_http_request_duration_seconds{method,route}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoft_service.errors import AutoFTError
from autoft_service.store import Histogram as StoreHistogram
from autoft_service.store import JobStore

log = logging.getLogger(__name__)


def _histogram(name: str, doc: str, h: StoreHistogram) -> HistogramMetricFamily:
    buckets = [("+Inf" if le == float("inf") else repr(float(le)), n) for le, n in h.buckets]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.total)


class StoreCollector(Collector):
    """Reads the job store on every scrape."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("autoft_store_up", "1 if the job store answered this scrape.")
        try:
            jobs = self.store.count_jobs_by_state()
            trials = self.store.count_trials_by_state()
            trial_h = self.store.trial_duration_histogram()
            wait_h = self.store.queue_wait_histogram()
        except AutoFTError as e:
            log.warning("metrics: job store unavailable: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        g = GaugeMetricFamily("autoft_jobs_by_state", "Jobs in each state.", labels=["state"])
        for state, n in jobs.items():
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily("autoft_trials_by_state", "Trials in each state.", labels=["state"])
        for state, n in trials.items():
            g.add_metric([state], n)
        yield g
        yield _histogram("autoft_trial_duration_seconds", "Wall time of finished trials.", trial_h)
        yield _histogram("autoft_queue_wait_seconds", "Time from submission to a job's first start.", wait_h)


class AppMetrics:
    """The registry of one app with its collectors."""

    def __init__(self, store: JobStore) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StoreCollector(store))
        self.requests = Counter(
            "autoft_http_requests",
            "HTTP requests served.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "autoft_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route_template(scope: Scope) -> str:
    """The matched route's path template with its router prefix (``/v1/jobs/{job_id}``), or "unmatched"."""
    ctx = (scope.get("fastapi") or {}).get("effective_route_context")
    path = getattr(ctx, "path", None) or getattr(scope.get("route"), "path", None)
    return str(path) if path else "unmatched"


class RequestMetrics:
    """ASGI middleware counting requests by route template (not raw path, to bound label cardinality)."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
