"""Liveness, readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from autoft_service.api.errors_http import ErrorResponse, error_response
from autoft_service.api.schemas import Health, Readiness
from autoft_service.errors import AutoFTError, BackendUnavailable

router = APIRouter(tags=["health"])

#: A readiness check returns normally when its backend is usable and raises otherwise.
ReadinessCheck = Callable[[], object]
CHECK_TIMEOUT_S = 5.0


def run_checks(checks: Mapping[str, ReadinessCheck], timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, str]:
    """Run every check concurrently with a timeout; ``"ok"`` or the reason it failed, by name."""
    results: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, len(checks)), thread_name_prefix="readyz")
    try:
        futures = {name: pool.submit(check) for name, check in checks.items()}
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout_s)
                results[name] = "ok"
            except FutureTimeout:
                results[name] = f"timed out after {timeout_s:g}s"
            except AutoFTError as e:
                results[name] = e.message
            except Exception as e:  # a probe may fail in any way; report it, do not crash
                results[name] = f"{type(e).__name__}: {e}"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": ErrorResponse, "description": "A check failed; details name it."}},
)
def readyz(request: Request) -> Readiness | JSONResponse:
    """Readiness: the job store (and any other configured backend) answers."""
    checks: Mapping[str, ReadinessCheck] = request.app.state.readiness_checks
    results = run_checks(checks)
    failed = [name for name, outcome in results.items() if outcome != "ok"]
    if failed:
        error = BackendUnavailable(
            f"not ready: {', '.join(failed)}", field=failed[0], details={"checks": results}
        )
        return error_response(error, 503)
    return Readiness(checks=results)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics of the service."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
