"""API-key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` → the key's tenant.

A key checked against the job store is trusted for ``AUTOFT_AUTH_CACHE_SECONDS`` by this process
(:class:`AuthCache`), so a burst of requests with one key costs one database look-up, and a revoked key is
refused at most that many seconds after ``autoft keys revoke``. Only keys the store accepted are cached (by
their SHA-256), so a wrong key is always checked against the store.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from autoft_service.api.deps import SettingsDep, StoreDep
from autoft_service.api.ratelimit import RateLimiter
from autoft_service.errors import Unauthorized
from autoft_service.settings import Settings
from autoft_service.store import JobStore

#: Every request is this tenant when authentication is disabled (development only).
DEFAULT_TENANT = "default"
#: Above this many cached keys, the expired ones are dropped (and all of them if none has expired).
MAX_CACHED_KEYS = 10_000

bearer_scheme = HTTPBearer(
    auto_error=False, bearerFormat="aft_<prefix>_<secret>", description="An API key as a bearer token."
)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")


class AuthCache:
    """Key digest → (tenant, expiry): keys the store accepted, trusted for ``ttl_s`` seconds.

    ``ttl_s == 0`` turns the cache off. ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> str | None:
        """The tenant of a key accepted less than ``ttl_s`` seconds ago, else ``None``."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            self._entries.pop(digest, None)
            return None
        return entry[0]

    def put(self, digest: str, tenant: str) -> None:
        if self.ttl_s <= 0:
            return
        now = self.clock()
        with self._lock:
            if len(self._entries) >= MAX_CACHED_KEYS:
                expired = [d for d, (_, until) in self._entries.items() if until <= now]
                for d in expired or list(self._entries):
                    del self._entries[d]
            self._entries[digest] = (tenant, now + self.ttl_s)


def get_tenant(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> str:
    """The tenant of the request's API key; ``Unauthorized`` without a valid key, ``RateLimited`` when the
    key is over its request rate. (Blocking on a cache miss: for sync code; routes depend on ``Tenant``.)"""
    tenant, key = _tenant_without_store(request, settings, bearer, api_key)
    return tenant if tenant is not None else _authenticate(request, store, key)


async def tenant_dependency(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> str:
    """:func:`get_tenant` as an async dependency: a cached key costs no thread hop; a key not in the cache
    is checked against the store in the thread pool."""
    tenant, key = _tenant_without_store(request, settings, bearer, api_key)
    return tenant if tenant is not None else await run_in_threadpool(_authenticate, request, store, key)


def _tenant_without_store(
    request: Request,
    settings: Settings,
    bearer: HTTPAuthorizationCredentials | None,
    api_key: str | None,
) -> tuple[str | None, str]:
    """The tenant when no store lookup is needed (development without auth, or a cached key), rate
    limited; else ``None``. Also the request's key (``Unauthorized`` when it has none)."""
    if settings.auth_disabled and settings.environment == "development":
        rate_limit(request, f"tenant:{DEFAULT_TENANT}")
        return DEFAULT_TENANT, ""
    key = _key_of(bearer, api_key)
    digest = _digest(key)
    tenant = _cached(request, digest)
    if tenant is not None:
        rate_limit(request, "key:" + digest)
    return tenant, key


def _authenticate(request: Request, store: JobStore, key: str) -> str:
    """Check ``key`` against the store (``Unauthorized`` if invalid), cache its tenant, rate limit it."""
    digest = _digest(key)
    tenant = _remember(request, digest, store.authenticate(key))
    rate_limit(request, "key:" + digest)
    return tenant


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_of(bearer: HTTPAuthorizationCredentials | None, api_key: str | None) -> str:
    key = bearer.credentials if bearer is not None else api_key
    if not key:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    return key


def _cached(request: Request, digest: str) -> str | None:
    cache: AuthCache | None = getattr(request.app.state, "auth_cache", None)
    return cache.get(digest) if cache is not None else None


def _remember(request: Request, digest: str, tenant: str) -> str:
    cache: AuthCache | None = getattr(request.app.state, "auth_cache", None)
    if cache is not None:
        cache.put(digest, tenant)
    return tenant


def rate_limit(request: Request, bucket: str) -> None:
    """Take a token from ``bucket`` of the app's rate limiter (``RateLimited`` when it has none)."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(bucket)


Tenant = Annotated[str, Depends(tenant_dependency)]
