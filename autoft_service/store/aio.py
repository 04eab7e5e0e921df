"""The API's hottest job-store reads on the event loop, for PostgreSQL.

A read through the sync store costs a thread-pool hop and SQLAlchemy's per-statement work (about as much CPU
as the query itself). On PostgreSQL, :class:`AsyncReads` runs the same statements (compiled once from the
SQLAlchemy ones, so both paths read the same columns in the same order) on psycopg's async connections in
autocommit mode (each statement its own snapshot, as :meth:`Database.reader` does), from a small pool owned
by the running event loop. Outages are ``BackendUnavailable``, as on the sync path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import ClauseElement
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy.engine import make_url

from autoft_service.errors import BackendUnavailable

#: Async connections one process keeps open (on top of the sync engine's pool).
ASYNC_POOL_SIZE = 5
#: How long a read waits for a free connection before it is ``BackendUnavailable``.
ACQUIRE_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10
_DIALECT = pg_psycopg.dialect()


def compile_pg(statement: ClauseElement) -> str:
    """``statement`` as PostgreSQL SQL with ``%(name)s`` placeholders for its bound parameters."""
    return str(statement.compile(dialect=_DIALECT))


def _unavailable(e: psycopg.Error) -> BackendUnavailable:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return BackendUnavailable(f"job store unavailable: {reason}")


class AsyncPool:
    """At most ``size`` psycopg async connections (autocommit, session time zone UTC), opened on demand and
    reused. A connection idle for more than ``ping_after_idle_s`` is pinged before use (a dead one is
    replaced); one that fails mid-statement is closed, not reused. The pool belongs to the event loop that
    first used it; used from another loop (a new test client, say) it starts over."""

    def __init__(self, conninfo: str, size: int, ping_after_idle_s: float) -> None:
        self.conninfo = conninfo
        self.size = size
        self.ping_after_idle_s = ping_after_idle_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[psycopg.AsyncConnection[Any], float]] = []

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            for conn, _ in self._idle:
                conn.pgconn.finish()  # opened on the old loop: closed without it
            self._loop, self._slots, self._idle = loop, asyncio.Semaphore(self.size), []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection for the block; ``BackendUnavailable`` when none can be had."""
        self._bind()
        try:
            async with asyncio.timeout(ACQUIRE_TIMEOUT_S):
                await self._slots.acquire()
        except TimeoutError:
            raise BackendUnavailable("job store unavailable: connection pool exhausted") from None
        try:
            conn = await self._checkout()
            try:
                yield conn
            except BaseException:
                await conn.close()  # mid-statement state unknown (an error, a cancelled request)
                raise
            if conn.closed or conn.broken:
                await conn.close()
            else:
                self._idle.append((conn, time.monotonic()))
        finally:
            self._slots.release()

    async def _checkout(self) -> psycopg.AsyncConnection[Any]:
        while self._idle:
            conn, since = self._idle.pop()  # the most recently used: the others may idle out
            if time.monotonic() - since <= self.ping_after_idle_s:
                return conn
            try:
                await conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                await conn.close()
        try:
            return await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, options="-c TimeZone=UTC"
            )
        except psycopg.Error as e:
            raise _unavailable(e) from e

    def discard(self) -> None:
        """Close the idle connections (those in use are closed when their block ends)."""
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.pgconn.finish()


#: A compiled statement, its parameters and the positions of its timestamp columns, whose values are
#: returned in ``datetime.UTC`` (as the sync store's ``UTCDateTime`` returns them).
Query = tuple[str, dict[str, Any], Sequence[int]]


class AsyncReads:
    """Run compiled statements on an :class:`AsyncPool` for ``url`` (a SQLAlchemy PostgreSQL URL)."""

    def __init__(self, url: str, *, size: int = ASYNC_POOL_SIZE, ping_after_idle_s: float) -> None:
        u = make_url(url).set(drivername="postgresql")
        self.pool = AsyncPool(u.render_as_string(hide_password=False), size, ping_after_idle_s)

    async def fetch(self, queries: Sequence[Query], *, rows: bool = True) -> list[list[tuple[Any, ...]]]:
        """The rows of each query in turn, on one connection (``rows=False``: statements that return
        none, such as an INSERT; each one is its own transaction)."""
        out: list[list[tuple[Any, ...]]] = []
        try:
            async with self.pool.connection() as conn:
                for sql, params, utc_columns in queries:
                    cur = await conn.execute(sql, params)  # type: ignore[arg-type]  # compiled, not a literal
                    if not rows:
                        out.append([])
                        continue
                    got = await cur.fetchall()
                    out.append([_utc(row, utc_columns) for row in got] if utc_columns else got)
        except psycopg.OperationalError as e:
            raise _unavailable(e) from e
        except psycopg.InterfaceError as e:
            raise _unavailable(e) from e
        return out


def _utc(row: tuple[Any, ...], columns: Sequence[int]) -> tuple[Any, ...]:
    values = list(row)
    for i in columns:
        v = values[i]
        if isinstance(v, datetime):
            values[i] = v.astimezone(UTC)
    return tuple(values)
