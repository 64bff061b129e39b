"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sparekey.runtime import Sparekey
from sparekey.storage.writelock import WriteLock


@pytest.fixture
def other_process(sparekey: Sparekey) -> Iterator[WriteLock]:
    """SQLite's write lock as another process on the same file sees it: ``flock`` locks belong to
    an open file, so two opens of one file exclude each other even in one process."""
    assert sparekey.db.write_lock is not None
    other = WriteLock(sparekey.db.write_lock.path, timeout=sparekey.db.write_lock.timeout)
    yield other
    other.close()
