"""Several processes or threads opening a new SQLite database at the same moment (nodes
starting together, migrators racing): none of them fails on the switch into WAL mode."""

import threading
from pathlib import Path

from sparekey.storage.database import Database

OPENERS = 6
ROUNDS = 200  # without waiting, the switch into WAL failed in a few rounds of 200


def test_connections_opening_a_new_file_at_once_all_get_wal(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    modes: list[str] = []
    for round_ in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
        databases = [Database(url) for _ in range(OPENERS)]
        barrier = threading.Barrier(OPENERS)

        def open_and_read(db: Database, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                with db.read() as conn:
                    modes.append(str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_and_read, args=(db,)) for db in databases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for db in databases:
            db.dispose()
    assert [repr(e) for e in errors] == []
    assert modes == ["wal"] * (OPENERS * ROUNDS)
