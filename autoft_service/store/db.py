"""Engines, sessions and migrations. Database errors become ``BackendUnavailable`` here, at the boundary.

SQLite gets WAL (readers never block the writer), a busy timeout and foreign keys; SQLAlchemy emits the
``BEGIN`` itself so that write transactions can start with ``BEGIN IMMEDIATE`` and take the write lock up
front (a deferred transaction that reads, then writes, can fail at once with "database is locked" instead of
waiting for the busy timeout).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from autoft_service.errors import BackendUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Our own Alembic version table, so the job store can share a database with Optuna or MLflow (both use
#: Alembic with the default ``alembic_version`` table).
VERSION_TABLE = "autoft_alembic_version"
SQLITE_BUSY_TIMEOUT_MS = 15_000
#: PostgreSQL connections one engine keeps open (opened on demand, then reused; no overflow connections that
#: are opened and closed again under load, each one a new server process). Requests beyond it wait.
PG_POOL_SIZE = 10
#: A pooled PostgreSQL connection idle for longer than this is pinged before use (a dead one is replaced);
#: one in steady use is not, so a busy API pays no extra round trip per request.
PING_AFTER_IDLE_S = 5.0
_WRITE = "autoft_write"


def finite(value: Any) -> Any:
    """``value`` with every NaN / ±inf float (nested in dicts and lists too) replaced by ``None``.

    JSON has no NaN: PostgreSQL's JSONB refuses it and API responses could not be encoded.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return finite(obj.item())
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def json_dumps(value: Any) -> str:
    """The JSON serialiser of every JSON column: strict JSON (non-finite floats become null)."""
    try:  # the common case, without first copying the whole value through finite()
        return json.dumps(value, allow_nan=False, default=_json_default)
    except ValueError:  # a NaN or an infinity somewhere
        return json.dumps(finite(value), allow_nan=False, default=_json_default)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``, configured for concurrent use by the API and runners."""
    u = make_url(url)
    kwargs.setdefault("json_serializer", json_dumps)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault(
            "connect_args", {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        engine = create_engine(u, **kwargs)
        _configure_sqlite(engine)
        return engine
    ping_after_idle_s = kwargs.pop("ping_after_idle_s", PING_AFTER_IDLE_S)
    kwargs.setdefault("pool_size", PG_POOL_SIZE)
    kwargs.setdefault("max_overflow", 0)
    engine = create_engine(u, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_after_idle_s)
    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection on checkout only when it sat in the pool for more than ``idle_s`` seconds
    (SQLAlchemy's ``pool_pre_ping`` pings every checkout: one more round trip per request). A connection
    that fails the ping is replaced; one that died while in use fails its statement, and that disconnect
    invalidates the whole pool, so each outage costs at most the requests in flight."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= idle_s:
            return
        if not engine.dialect._do_ping_w_event(dbapi_connection):
            raise DisconnectionError("pooled connection failed its ping")


def _again_while_locked(attempt: Callable[[], T], errors: type[Exception]) -> T:
    """``attempt()``, tried again while it fails with SQLite's "database is locked" (one of ``errors``),
    until the busy timeout. SQLite gives that answer at once, busy timeout or not, to connections that open
    a new file together (switching it to WAL, building its index, needs the file to itself): what a busy
    handler would do for them."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return attempt()
        except errors as e:
            if "locked" not in str(getattr(e, "orig", e)) or time.monotonic() > deadline:  # the driver's message
                raise
            time.sleep(0.02)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (below), not the sqlite3 module
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _again_while_locked(lambda: cur.execute("PRAGMA journal_mode=WAL"), sqlite3.OperationalError)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


def is_unavailable(e: DBAPIError) -> bool:
    """Whether a driver error means "cannot reach / use the database" rather than a bug in a statement."""
    return isinstance(e, (OperationalError, InterfaceError)) or bool(e.connection_invalidated)


class Database:
    """An engine plus read and write session factories; every session is one transaction."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        self._write_engine = self.engine.execution_options(**{_WRITE: True})
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error; database outages are re-raised
        as ``BackendUnavailable``."""
        factory = self._write if write else self._read
        with _outages_unavailable(), factory.begin() as s:
            yield s

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction on a Core connection (no ORM unit of work), for inserts whose values are
        all known: committed on success, rolled back on any error, outages as ``BackendUnavailable``."""
        with _outages_unavailable(), self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        """A connection for reads that need no transaction of their own: autocommit on PostgreSQL (each
        statement its own snapshot, as in a READ COMMITTED transaction, without the BEGIN and COMMIT round
        trips), one read transaction elsewhere. Outages are re-raised as ``BackendUnavailable``."""
        with _outages_unavailable():
            if self.dialect == "postgresql":
                with self._autocommit.connect() as conn:
                    yield conn
            else:
                with self.engine.begin() as conn:
                    yield conn

    def ping(self) -> None:
        """Run ``SELECT 1``; raise ``BackendUnavailable`` if the database does not answer."""
        with self.session() as s:
            s.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _reason(e: DBAPIError) -> str:
    return str(e.orig).strip().splitlines()[0] if e.orig is not None else type(e).__name__


# Migrations -------------------------------------------------------------------------------------------
def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = VERSION_TABLE
    return cfg


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` to ``revision`` (idempotent; safe to run concurrently)."""
    from alembic import command

    def migrate() -> None:
        # BEGIN IMMEDIATE on SQLite / an advisory lock on PostgreSQL: concurrent upgrades run one at a time.
        with engine.execution_options(**{_WRITE: True}).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('autoft_store_migrations'))"))
            command.upgrade(_alembic_config(conn), revision)

    try:
        if engine.dialect.name == "sqlite":  # one transaction: a lock refused at once is simply tried again
            _again_while_locked(migrate, DBAPIError)
        else:
            migrate()
    except DBAPIError as e:
        if is_unavailable(e):
            raise BackendUnavailable(f"job store unavailable: {_reason(e)}") from e
        raise


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (the latest by default)."""
    engine = make_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


@contextmanager
def _outages_unavailable() -> Iterator[None]:
    """Re-raise a database outage (or an exhausted pool) inside the block as ``BackendUnavailable``."""
    try:
        yield
    except DBAPIError as e:
        if is_unavailable(e):
            raise BackendUnavailable(f"job store unavailable: {_reason(e)}") from e
        raise
    except PoolTimeoutError as e:
        raise BackendUnavailable("job store unavailable: connection pool exhausted") from e
