"""Short-lived signed links to a job's report, so a browser can open it without an ``Authorization`` header.

A token is ``<expires_at>.<signature>``: ``expires_at`` in Unix seconds and an HMAC-SHA256, keyed by the
service's link secret, over the job id, the job's tenant and the expiry. It opens that one job's report until
it expires, and nothing else (no other route, no other job, no other tenant's job).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from autoft_service.errors import Unauthorized
from autoft_service.settings import Settings

PURPOSE = b"autoft-report-link-v1"


def link_key(settings: Settings) -> bytes:
    """The HMAC key: ``AUTOFT_REPORT_LINK_SECRET`` when set, else random for this process (its links stop
    working when it restarts, and another API process does not accept them)."""
    if settings.report_link_secret is not None:
        return settings.report_link_secret.get_secret_value().encode()
    return secrets.token_bytes(32)


def _signature(key: bytes, job_id: str, tenant: str, expires_at: int) -> str:
    message = b"\0".join((PURPOSE, job_id.encode(), tenant.encode(), str(expires_at).encode()))
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(key: bytes, job_id: str, tenant: str, expires_at: int) -> str:
    """The token for ``job_id`` of ``tenant``, valid until ``expires_at`` (Unix seconds)."""
    return f"{expires_at}.{_signature(key, job_id, tenant, expires_at)}"


def verify(key: bytes, token: str, job_id: str, tenant: str, now: float | None = None) -> None:
    """``Unauthorized`` (field ``token``) unless ``token`` was signed for this job and tenant and has not
    expired."""
    expires, _, signature = token.partition(".")
    if not (expires.isascii() and expires.isdigit()) or len(expires) > 12 or not signature:
        raise Unauthorized("invalid report link token", field="token")
    expected = _signature(key, job_id, tenant, int(expires))
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise Unauthorized("invalid report link token", field="token")
    if int(expires) <= (time.time() if now is None else now):
        raise Unauthorized("the report link has expired; ask for a new one", field="token")
