"""Reliability tests reuse the integration fixtures (a fresh PostgreSQL database per test)."""

from tests.integration.conftest import postgres_url  # noqa: F401
