"""Statements for the hot path: SQLAlchemy Core, compiled once per dialect, run on the DB-API.

SQLAlchemy spends more time per execution than SQLite spends running a small statement. The verify
path runs a few fixed statements many times a second, so it compiles them once with SQLAlchemy
(same SQL, same types' bind processors) and runs them on the driver's cursor inside a :class:`Unit`.
Every other path uses SQLAlchemy connections as usual; :func:`run` lets a repository function serve
both with one statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Delete, Dialect, Insert, Select, Update

from sparekey.storage.writelock import WriteLock

__all__ = ["Cursor", "Prepared", "Unit", "run"]


class Cursor(Protocol):
    """What both a DB-API cursor and a SQLAlchemy result offer."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # None for named parameter styles
    defaults: dict[str, Any]
    processors: Mapping[str, Callable[[Any], Any]]
    columns: tuple[Callable[[Any], Any] | None, ...]  # result processors, one per column

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            value if process is None or value is None else process(value)
            for process, value in zip(self.columns, raw, strict=True)
        )

    def parameters(self, given: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = self.defaults | dict(given)
        for name, process in self.processors.items():
            values[name] = process(values[name])
        if self.positions is None:
            return values
        return [values[name] for name in self.positions]


class Prepared:
    def __init__(self, statement: Select[Any] | Update | Insert | Delete) -> None:
        self.statement = statement
        self._by_dialect: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            binds = {name: compiled.binds[name] for name in compiled.bind_names.values()}
            processors = {}
            for name, bind in binds.items():
                process = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    processors[name] = process
            found = _Compiled(
                sql=compiled.string,
                positions=tuple(compiled.positiontup) if compiled.positiontup else None,
                defaults={name: b.value for name, b in binds.items() if not b.required},
                processors=processors,
                columns=tuple(
                    column.type.dialect_impl(dialect).result_processor(dialect, None)
                    for column in self.statement.exported_columns
                ),
            )
            self._by_dialect[dialect.name] = found
        return found


class _ProcessedCursor:
    """A DB-API cursor whose rows come back typed as SQLAlchemy would type them."""

    def __init__(self, cursor: Any, compiled: _Compiled) -> None:
        self._cursor = cursor
        self._compiled = compiled

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def fetchone(self) -> tuple[Any, ...] | None:
        raw = self._cursor.fetchone()
        return None if raw is None else self._compiled.row(raw)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [self._compiled.row(raw) for raw in self._cursor.fetchall()]


class Unit:
    """A pooled DB-API connection that reads until :meth:`write`, then is one transaction.

    Reads run in autocommit, each statement on its own (no lock on SQLite, no BEGIN round trip on
    PostgreSQL); :meth:`write` begins the transaction (``BEGIN IMMEDIATE`` on SQLite), which is
    committed at the end. Built by :meth:`sparekey.storage.database.Database.unit`.
    """

    def __init__(
        self, dbapi_connection: Any, dialect: Dialect, *, write_lock: WriteLock | None = None
    ) -> None:
        self._connection = dbapi_connection
        self._dialect = dialect
        self._sqlite = dialect.name == "sqlite"
        self._write_lock = write_lock
        self._locked = False
        self._after_commit: list[Callable[[], None]] = []
        self.writing = False
        if not self._sqlite:  # reads in autocommit: one round trip, no BEGIN/ROLLBACK around them
            self._connection.driver_connection.autocommit = True

    def execute(self, prepared: Prepared, parameters: Mapping[str, Any]) -> Cursor:
        compiled = prepared.compiled(self._dialect)
        cursor = self._connection.cursor()
        cursor.execute(compiled.sql, compiled.parameters(parameters))
        if any(compiled.columns):
            return _ProcessedCursor(cursor, compiled)
        return cursor  # type: ignore[no-any-return]

    def write(self) -> Unit:
        """From here on, what this unit does is one transaction, committed at the end."""
        if not self.writing:
            if self._sqlite and self._write_lock is not None:
                self._locked = self._write_lock.acquire()
            self._begin()
        return self

    def try_write(self) -> bool:
        """:meth:`write`, but only if no other writer holds SQLite's write lock this instant:
        False, and nothing begun, if one does. On PostgreSQL, which has no such lock, it always
        begins."""
        if not self.writing:
            if self._sqlite and self._write_lock is not None:
                taken = self._write_lock.try_acquire()
                if taken is False:
                    return False
                self._locked = bool(taken)
            self._begin()
        return True

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this unit has committed; never if it rolls back."""
        self._after_commit.append(callback)

    def _begin(self) -> None:
        self.writing = True
        if self._sqlite:
            self._connection.cursor().execute("BEGIN IMMEDIATE")
        else:  # the driver begins a transaction with the next statement
            self._connection.driver_connection.autocommit = False

    def finish(self, *, commit: bool) -> None:
        """Commit (if asked and anything was written) or roll back, and hand the connection back
        to the pool as it expects it: out of autocommit. A connection that cannot be put back in
        that state is discarded, never reused. Then, if it committed, the :meth:`after_commit`
        callbacks run, outside the write lock."""
        callbacks, self._after_commit = self._after_commit, []
        committed = False
        try:
            if commit and self.writing:
                self._connection.commit()
                committed = True
            else:
                self._connection.rollback()
        finally:
            if self._locked:
                self._locked = False
                assert self._write_lock is not None
                self._write_lock.release()
            if not self._sqlite:
                try:
                    self._connection.rollback()
                    self._connection.driver_connection.autocommit = False
                except Exception:
                    self._connection.invalidate()
                    raise
        if committed:
            for callback in callbacks:
                callback()


def run(target: Connection | Unit, prepared: Prepared, parameters: Mapping[str, Any]) -> Cursor:
    """Run ``prepared`` through the fast path of a :class:`Unit` or a SQLAlchemy connection."""
    if isinstance(target, Unit):
        return target.execute(prepared, parameters)
    return target.execute(prepared.statement, dict(parameters))
