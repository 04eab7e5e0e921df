"""API-key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` → the key's tenant."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from autoft_service.api.deps import SettingsDep, StoreDep
from autoft_service.api.ratelimit import RateLimiter
from autoft_service.errors import Unauthorized

#: Every request is this tenant when authentication is disabled (development only).
DEFAULT_TENANT = "default"

bearer_scheme = HTTPBearer(
    auto_error=False, bearerFormat="aft_<prefix>_<secret>", description="An API key as a bearer token."
)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")


def get_tenant(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> str:
    """The tenant of the request's API key; ``Unauthorized`` without a valid key, ``RateLimited`` when the
    key is over its request rate."""
    if settings.auth_disabled and settings.environment == "development":
        rate_limit(request, f"tenant:{DEFAULT_TENANT}")
        return DEFAULT_TENANT
    key = bearer.credentials if bearer is not None else api_key
    if not key:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    tenant = store.authenticate(key)
    rate_limit(request, "key:" + hashlib.sha256(key.encode()).hexdigest())
    return tenant


def rate_limit(request: Request, bucket: str) -> None:
    """Take a token from ``bucket`` of the app's rate limiter (``RateLimited`` when it has none)."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(bucket)


Tenant = Annotated[str, Depends(get_tenant)]
