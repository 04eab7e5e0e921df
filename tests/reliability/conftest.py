"""Reliability tests reuse the integration fixtures (a fresh PostgreSQL database, the native stack)."""

from tests.integration.conftest import native_stack, postgres_url  # noqa: F401
