"""API keys. A key is ``aft_<prefix>_<secret>``; only its SHA-256 is stored, ``prefix`` finds the row."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid

from sqlalchemy import bindparam, select

from autoft_service.errors import InvalidSpec, Unauthorized
from autoft_service.store.base import StoreBase
from autoft_service.store.models import ApiKey
from autoft_service.store.records import ApiKeyRecord

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY_PATTERN = re.compile(r"^aft_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
#: What :meth:`KeyOps.authenticate` reads, built once (it runs for every key the API has not cached).
_KEY_BY_PREFIX = select(ApiKey.tenant, ApiKey.key_hash, ApiKey.revoked_at).where(
    ApiKey.prefix == bindparam("prefix")
)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyOps(StoreBase):
    def create_api_key(self, tenant: str, name: str) -> tuple[str, ApiKeyRecord]:
        """Create a key for ``tenant``; return the plaintext key (shown once, never stored) and its record."""
        if not TENANT_PATTERN.match(tenant):
            raise InvalidSpec("tenant must be 1-64 letters, digits, '_', '.' or '-'", field="tenant")
        if not 0 < len(name) <= 128:
            raise InvalidSpec("key name must be 1 to 128 characters", field="name")
        prefix = secrets.token_hex(6)
        key = f"aft_{prefix}_{secrets.token_urlsafe(32)}"
        with self.db.session(write=True) as s:
            row = ApiKey(
                id=uuid.uuid4().hex, tenant=tenant, name=name, prefix=prefix, key_hash=hash_key(key),
                created_at=self.now(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            return key, ApiKeyRecord.of(row)

    def authenticate(self, key: str) -> str:
        """The tenant of a valid, unrevoked key; otherwise ``Unauthorized`` (same message for every case)."""
        m = _KEY_PATTERN.match(key.strip())
        if m is None:
            raise Unauthorized("invalid API key")
        with self.db.reader() as conn:
            row = conn.execute(_KEY_BY_PREFIX, {"prefix": m.group(1)}).first()
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, hash_key(key)):
            raise Unauthorized("invalid API key")
        return str(row.tenant)

    def revoke_api_key(self, key_id_or_prefix: str) -> ApiKeyRecord:
        """Revoke a key by its id or prefix (idempotent)."""
        with self.db.session(write=True) as s:
            row = s.scalars(
                select(ApiKey).where((ApiKey.id == key_id_or_prefix) | (ApiKey.prefix == key_id_or_prefix))
            ).first()
            if row is None:
                raise Unauthorized(f"no API key {key_id_or_prefix!r}", field="key")
            if row.revoked_at is None:
                row.revoked_at = self.now()
            return ApiKeyRecord.of(row)

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        with self.db.session() as s:
            q = select(ApiKey).order_by(ApiKey.created_at)
            if tenant is not None:
                q = q.where(ApiKey.tenant == tenant)
            return [ApiKeyRecord.of(r) for r in s.scalars(q)]
