"""Alembic environment: runs on a connection handed over by ``autoft_service.store.db`` (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from autoft_service.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through autoft_service.store.upgrade(url), which passes a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=config.attributes.get("version_table", "autoft_alembic_version"),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
