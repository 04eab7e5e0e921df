"""Backend-neutral fixtures of the shared store suite. Each backend's conftest imports these and provides
``store_url`` (a fresh, migrated database per test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from autoft_service.store import JobStore
from tests.unit.store.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_store(store_url: str, clock: FakeClock) -> Iterator[Callable[[], JobStore]]:
    """Open another ``JobStore`` (its own engine, like another process) on the test database."""
    stores: list[JobStore] = []

    def make() -> JobStore:
        s = JobStore(store_url, clock=clock)
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def store(open_store: Callable[[], JobStore]) -> JobStore:
    return open_store()
