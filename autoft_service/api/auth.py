"""API-key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` → the key's tenant.

A key checked against the job store is trusted for ``AUTOFT_AUTH_CACHE_SECONDS`` by this process
(:class:`AuthCache`), so a burst of requests with one key costs one database look-up, and a revoked key is
refused at most that many seconds after ``autoft keys revoke``. Only keys the store accepted are cached (by
their SHA-256), so a wrong key is always checked against the store. Requests that arrive together with a key
the cache does not hold (the first burst, or every burst after an entry expired) share one store look-up.

The routes' :data:`Tenant` dependency reads the two headers itself (one dependency instead of four: FastAPI
spends more time resolving a dependency than this one spends on a cached key); ``install_openapi`` lists
:data:`SECURITY_SCHEMES` on every route that depends on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.base import SecurityBase
from starlette.concurrency import run_in_threadpool

from autoft_service.api.deps import SettingsDep, StoreDep, app_settings
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
#: The schemes a request may authenticate with (either one), as OpenAPI lists them.
SECURITY_SCHEMES: tuple[SecurityBase, ...] = (bearer_scheme, api_key_scheme)


class AuthCache:
    """Key digest → (tenant, expiry): keys the store accepted, trusted for ``ttl_s`` seconds.

    ``ttl_s == 0`` turns the cache off. ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        #: Store look-ups under way, by key digest (touched from the event loop only).
        self.pending: dict[str, asyncio.Future[str]] = {}

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


async def tenant_dependency(request: Request) -> str:
    """:func:`get_tenant` as the routes' async dependency, reading the key headers itself: a cached key
    costs no thread hop; a key not in the cache is checked against the store in the thread pool, once for
    all the requests that carry it meanwhile."""
    settings = app_settings(request)
    tenant, key = _tenant_without_store(request, settings, *_credentials(request))
    if tenant is not None:
        return tenant
    cache: AuthCache | None = getattr(request.app.state, "auth_cache", None)
    store: JobStore = request.app.state.store
    if cache is None or cache.ttl_s <= 0:
        return await run_in_threadpool(_authenticate, request, store, key)
    digest = _digest(key)
    lookup = cache.pending.get(digest)
    if lookup is None:
        lookup = asyncio.ensure_future(run_in_threadpool(store.authenticate, key))
        cache.pending[digest] = lookup
        lookup.add_done_callback(lambda done: _forget(cache, digest, done))
    tenant = _remember(request, digest, await asyncio.shield(lookup))
    rate_limit(request, "key:" + digest)
    return tenant


def _forget(cache: AuthCache, digest: str, done: asyncio.Future[str]) -> None:
    cache.pending.pop(digest, None)
    if not done.cancelled():
        done.exception()  # retrieved here too: every request that waited may have gone away


def _credentials(request: Request) -> tuple[HTTPAuthorizationCredentials | None, str | None]:
    """What :data:`bearer_scheme` and :data:`api_key_scheme` would pass: the bearer credentials (``None``
    unless the ``Authorization`` header is ``Bearer <credentials>``) and the ``X-API-Key`` header."""
    headers = request.headers
    authorization = headers.get("authorization")
    bearer = None
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme and credentials and scheme.lower() == "bearer":
            bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)
    return bearer, headers.get("x-api-key")


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


def security_requirements(dependency_calls: set[Any]) -> list[dict[str, list[str]]]:
    """The OpenAPI ``security`` of a route whose dependencies call ``dependency_calls``: either scheme
    when it authenticates through :func:`tenant_dependency`, else none (FastAPI lists the schemes of
    routes that depend on them directly)."""
    if tenant_dependency not in dependency_calls:
        return []
    return [{scheme.scheme_name: []} for scheme in SECURITY_SCHEMES]
