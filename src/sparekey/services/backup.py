"""Disaster-recovery backups: a consistent snapshot of every table, encrypted under a fresh key that
the deployment's KEK wraps (docs/decisions/0008-backups.md).

A backup file::

    SPAREKEY-BACKUP-1\\n
    manifest: one line of canonical JSON (versions, row counts, wrapped key, body checksum)\\n
    body:     frames of  length (4 bytes, big-endian) || AES-256-GCM sealed chunk

The body's plaintext is JSON lines: for each table of ``sparekey.storage.tables.metadata``, in
foreign-key order, a header ``{"table": ..., "columns": [...]}`` and then one array per row, bytes
as ``{"b64": ...}`` and datetimes as ``{"iso": ...}``. It names no database, so a backup of SQLite
restores into PostgreSQL and back, and a new table is backed up without a line of code here.

Every chunk's associated data binds the manifest (its hash, without the body checksum), the
chunk's index and whether it is the last one: an edited manifest, chunks reordered, removed or
appended, and a file cut at a chunk boundary all fail to authenticate. The checksum of the body in
the manifest tells an edited manifest from an edited body, so the error names which. Without the
KEK nothing in the file can be read, not even which users exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from alembic.util import CommandError
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    LargeBinary,
    Table,
    TypeDecorator,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.pool import StaticPool

from sparekey import __version__
from sparekey.crypto.aead import KEY_SIZE, DecryptionError, open_sealed, seal
from sparekey.crypto.keyring import Keyring, NewKey, StoredKey
from sparekey.crypto.providers import KeyProvider, KeyProviderError
from sparekey.domain.errors import BackupDamagedError, BackupError
from sparekey.domain.models import Caller
from sparekey.domain.ports import Clock
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.storage.database import Database
from sparekey.storage.keystore import SqlKeyStore
from sparekey.storage.tables import metadata

__all__ = [
    "CHUNK_SIZE",
    "MAGIC",
    "SEEDED_TABLES",
    "Manifest",
    "Progress",
    "create_backup",
    "kek_keyring",
    "restore_backup",
    "verify_backup",
]

MAGIC = b"SPAREKEY-BACKUP-1\n"
FORMAT = 1
CHUNK_SIZE = 1 << 20
# Tables a fresh migration already fills (the audit chain's genesis row); a restore replaces them.
# tests/services/test_backup.py checks that no other table starts with rows.
SEEDED_TABLES = frozenset({"audit_chain"})

_SEAL_OVERHEAD = 12 + 16  # nonce and tag (sparekey.crypto.aead)
_MAX_MANIFEST = 1 << 20
_BATCH = 1000
_NO_CHECKSUM = "0" * 64

Progress = Callable[[str, int, int], None]
"""Told ``(what is happening, rows done, rows in all)`` as a backup is written or read."""

KekResolver = Callable[[str], KeyProvider]
"""Opens the provider of the KEK with a given id (see ``sparekey.runtime.kek_resolver``)."""


# -- the manifest -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a backup holds and how to open it; readable without the KEK, and holding no secret."""

    backup_id: str
    created_at: datetime
    sparekey_version: str
    dialect: str
    schema_revision: str
    tables: Mapping[str, int]  # rows per table
    kek_id: str
    wrapped_key: bytes
    chunk_size: int
    body_sha256: str = _NO_CHECKSUM

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def _bound(self) -> dict[str, object]:
        """Every field but the body checksum (which is known only once the body is written)."""
        return {
            "format": FORMAT,
            "backup_id": self.backup_id,
            "created_at": self.created_at.isoformat(),
            "sparekey_version": self.sparekey_version,
            "dialect": self.dialect,
            "schema_revision": self.schema_revision,
            "tables": dict(self.tables),
            "kek_id": self.kek_id,
            "wrapped_key": base64.b64encode(self.wrapped_key).decode("ascii"),
            "chunk_size": self.chunk_size,
        }

    def line(self) -> bytes:
        return _canonical({**self._bound(), "body_sha256": self.body_sha256}) + b"\n"

    def digest(self) -> bytes:
        """What every chunk's associated data binds: the manifest without its body checksum."""
        return hashlib.sha256(b"sparekey-backup-manifest-v1|" + _canonical(self._bound())).digest()

    @classmethod
    def parse(cls, line: bytes) -> Manifest:
        try:
            doc = json.loads(line)
        except ValueError:
            raise BackupDamagedError("backup is damaged: its manifest is not readable") from None
        if not isinstance(doc, dict):
            raise BackupDamagedError("backup is damaged: its manifest is not readable")
        if doc.get("format") != FORMAT:
            raise BackupError(
                f"backup has format {doc.get('format')!r}; this Sparekey reads format {FORMAT}"
            )
        try:
            tables = doc["tables"]
            if not isinstance(tables, dict) or not all(
                isinstance(n, str) and type(c) is int for n, c in tables.items()
            ):
                raise TypeError("tables")
            manifest = cls(
                backup_id=_text(doc["backup_id"]),
                created_at=datetime.fromisoformat(_text(doc["created_at"])),
                sparekey_version=_text(doc["sparekey_version"]),
                dialect=_text(doc["dialect"]),
                schema_revision=_text(doc["schema_revision"]),
                tables=tables,
                kek_id=_text(doc["kek_id"]),
                wrapped_key=base64.b64decode(_text(doc["wrapped_key"]), validate=True),
                chunk_size=_count(doc["chunk_size"]),
                body_sha256=_text(doc["body_sha256"]),
            )
        except (KeyError, TypeError, ValueError):
            raise BackupDamagedError("backup was modified: its manifest is incomplete") from None
        if manifest.line() != line or manifest.chunk_size < 1:
            raise BackupDamagedError("backup was modified: its manifest was changed")
        return manifest


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _count(value: object) -> int:
    if type(value) is not int:
        raise TypeError("expected an integer")
    return value


def _key_aad(backup_id: str) -> bytes:
    return f"sparekey/backup-key/v1|{backup_id}".encode()


def _chunk_aad(manifest_digest: bytes, index: int, final: bool) -> bytes:
    return (
        b"sparekey/backup-chunk/v1|"
        + manifest_digest
        + index.to_bytes(8, "big")
        + (b"\x01" if final else b"\x00")
    )


# -- rows as portable JSON ----------------------------------------------------------------------

_Kind = Literal["bytes", "datetime", "plain"]


def _kind(column: Column[Any]) -> _Kind:
    """How a column's values travel in JSON, from the column's type (not from the values)."""
    column_type: Any = column.type
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    if isinstance(column_type, LargeBinary):
        return "bytes"
    if isinstance(column_type, DateTime):
        return "datetime"
    if column_type.python_type in (str, int, bool):
        return "plain"
    raise BackupError(f"backups cannot carry column {column} of type {column_type}")


def _encode(kind: _Kind, value: Any) -> object:
    if value is None:
        return None
    if kind == "bytes":
        return {"b64": base64.b64encode(value).decode("ascii")}
    if kind == "datetime":
        return {"iso": value.isoformat()}
    return value


def _decode(kind: _Kind, column: Column[Any], value: Any) -> object:
    if value is None:
        return None
    try:
        if kind == "bytes":
            return base64.b64decode(value["b64"], validate=True)
        if kind == "datetime":
            moment = datetime.fromisoformat(value["iso"])
            if moment.tzinfo is not None:
                return moment
        elif type(value) is column.type.python_type:
            return value
    except (KeyError, TypeError, ValueError):
        pass
    raise BackupError(f"backup does not fit this schema: a value of {column} cannot be read")


def _json_line(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


# -- writing ------------------------------------------------------------------------------------


def create_backup(
    path: Path,
    *,
    db: Database,
    keyring: Keyring,
    auditor: Auditor,
    clock: Clock,
    caller: Caller,
    chunk_size: int = CHUNK_SIZE,
    progress: Progress | None = None,
) -> Manifest:
    """Write a consistent, encrypted snapshot of every table to the new file ``path`` (mode 0600),
    while the server keeps running; then record ``backup.created`` (after the snapshot, so the
    backup itself does not hold that record)."""
    if path.exists():
        raise BackupError(f"{path} already exists; a backup never replaces a file")
    if not path.parent.is_dir():
        raise BackupError(f"directory {path.parent} does not exist")
    key = os.urandom(KEY_SIZE)
    backup_id = secrets.token_hex(16)
    kek_id, wrapped = keyring.wrap_with_kek(key, aad=_key_aad(backup_id))
    with _snapshot(db) as conn:
        revision = _revision(conn)
        if revision != db.head_revision():
            # The tables are read as this code knows them: a newer schema's columns would be
            # left out, and a restore of the result would lose them without a word.
            raise BackupError(
                f"the database schema is at revision {revision} and this Sparekey's ends at "
                f"{db.head_revision()}: back up with the Sparekey release whose migrations end at "
                f"{revision}, or finish the upgrade first"
            )
        counts = {table.name: _row_count(conn, table) for table in metadata.sorted_tables}
        manifest = Manifest(
            backup_id=backup_id,
            created_at=clock.now(),
            sparekey_version=__version__,
            dialect=db.engine.dialect.name,
            schema_revision=revision,
            tables=counts,
            kek_id=kek_id,
            wrapped_key=wrapped,
            chunk_size=chunk_size,
        )
        with _new_file(path) as out:
            out.write(MAGIC)
            at = out.tell()
            out.write(manifest.line())
            body = _ChunkWriter(out, key=key, manifest=manifest)
            _dump(conn, body, counts, progress)
            manifest = replace(manifest, body_sha256=body.close())
            # The checksum is fixed-width hex, so the final manifest fits its placeholder exactly.
            out.seek(at)
            out.write(manifest.line())
    with db.write() as conn:
        entry = AuditEntry(
            event="backup.created", details={"backup_id": backup_id, "rows": manifest.rows}
        )
        auditor.record(conn, entry, caller)
    return manifest


@contextmanager
def _snapshot(db: Database) -> Iterator[Connection]:
    """A connection that sees the database as it was at one instant, whatever commits meanwhile.

    SQLite: the online backup API copies the whole file in one step into memory (no plaintext
    copy touches the disk). PostgreSQL: one REPEATABLE READ, READ ONLY transaction, whose snapshot
    every table is read from; writers are never blocked.
    """
    if not db.is_sqlite:
        with db.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn
        return
    memory = sqlite3.connect(":memory:", check_same_thread=False)
    try:
        with db.engine.connect() as source:
            raw = source.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.backup(memory)  # all pages in one step: one consistent read of the database
        engine = create_engine("sqlite://", creator=lambda: memory, poolclass=StaticPool)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()
    finally:
        memory.close()


def _row_count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _revision(conn: Connection) -> str:
    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    if row is None:
        raise BackupError("the database has no schema revision; run `sparekey init`")
    return str(row[0])


def _dump(
    conn: Connection, body: _ChunkWriter, counts: Mapping[str, int], progress: Progress | None
) -> None:
    total, done = sum(counts.values()), 0
    for table in metadata.sorted_tables:
        # a server-side cursor on PostgreSQL, a batch of rows at a time (fewer for big rows)
        streaming = conn.execution_options(yield_per=_batch_size(table))
        if progress:
            progress("Backing up", done, total)
        columns = list(table.columns)
        kinds = [_kind(column) for column in columns]
        body.write(_json_line({"table": table.name, "columns": [c.name for c in columns]}))
        rows = 0
        query = select(table).order_by(*table.primary_key.columns)
        for row in streaming.execute(query):
            body.write(_json_line([_encode(k, v) for k, v in zip(kinds, row, strict=True)]))
            rows += 1
            if progress and (done + rows) % _BATCH == 0:
                progress("Backing up", done + rows, total)
        if rows != counts[table.name]:
            raise BackupError(f"table {table.name} changed while it was read; nothing was written")
        done += rows
    if progress:
        progress("Backing up", done, total)


def _batch_size(table: Table) -> int:
    """Rows per batch when reading or restoring ``table``: fewer for tables whose rows are large
    (vault backups hold up to ``vault_backup_max_bytes`` each), so memory stays bounded."""
    size = table.info.get("backup_batch", _BATCH)
    return size if isinstance(size, int) and size > 0 else _BATCH


class _ChunkWriter:
    """Seals the body's plaintext in chunks of the manifest's chunk size and frames them."""

    def __init__(self, out: IO[bytes], *, key: bytes, manifest: Manifest) -> None:
        self._out = out
        self._key = key
        self._digest = manifest.digest()
        self._size = manifest.chunk_size
        self._buffer = bytearray()
        self._index = 0
        self._sha = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) > self._size:  # keep at least one byte back for the final chunk
            self._emit(bytes(self._buffer[: self._size]), final=False)
            del self._buffer[: self._size]

    def close(self) -> str:
        """Seal what is left as the final chunk; returns the SHA-256 (hex) of the whole body."""
        self._emit(bytes(self._buffer), final=True)
        self._buffer.clear()
        return self._sha.hexdigest()

    def _emit(self, plaintext: bytes, *, final: bool) -> None:
        sealed = seal(self._key, plaintext, aad=_chunk_aad(self._digest, self._index, final))
        frame = len(sealed).to_bytes(4, "big") + sealed
        self._out.write(frame)
        self._sha.update(frame)
        self._index += 1


@contextmanager
def _new_file(path: Path) -> Iterator[IO[bytes]]:
    """A file that appears at ``path`` whole, durable and mode 0600, or not at all."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w+b") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temp, path)  # a rename that never replaces a file created meanwhile
        except FileExistsError:
            raise BackupError(f"{path} already exists; a backup never replaces a file") from None
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temp)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# -- reading ------------------------------------------------------------------------------------


def kek_keyring(resolve_kek: KekResolver) -> Keyring:
    """A keyring without data keys: all a backup needs, so a backup can be verified or restored
    on a machine that has the KEK (the key file, the HSM token, the KMS key) and nothing else."""
    return Keyring(store=_NoDataKeys(), resolve=resolve_kek)


class _NoDataKeys:
    def list_keys(self) -> Sequence[StoredKey]:
        return []

    def add_key(self, key: NewKey) -> StoredKey:
        raise BackupError("a keyring opened for a backup makes no data keys")


def verify_backup(path: Path, *, keyring: Keyring, progress: Progress | None = None) -> Manifest:
    """Read the whole backup as a restore would: the key unwrapped, every chunk authenticated,
    the checksum and every table's row count checked. Raises :class:`BackupError` at the first
    problem; changes nothing anywhere."""
    with _open(path) as (manifest, handle):
        _check_body(handle, manifest, _unwrap(keyring, manifest), progress)
    return manifest


@contextmanager
def _open(path: Path) -> Iterator[tuple[Manifest, IO[bytes]]]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise BackupError(f"no backup at {path}") from None
    with handle:
        magic = handle.readline(len(MAGIC))
        if magic != MAGIC:
            if magic and len(magic) < len(MAGIC) and MAGIC.startswith(magic):
                raise BackupDamagedError("backup is truncated")
            if magic.startswith(MAGIC[: MAGIC.rindex(b"-") + 1]):
                raise BackupError(f"{path} is a backup in a newer format than this Sparekey reads")
            raise BackupDamagedError(f"{path} is not a Sparekey backup")
        line = handle.readline(_MAX_MANIFEST)
        if not line.endswith(b"\n"):
            if len(line) < _MAX_MANIFEST:
                raise BackupDamagedError("backup is truncated")
            raise BackupDamagedError("backup is damaged: its manifest is not readable")
        yield Manifest.parse(line), handle


def _unwrap(keyring: Keyring, manifest: Manifest) -> bytes:
    try:
        return keyring.unwrap_with_kek(
            manifest.kek_id, manifest.wrapped_key, aad=_key_aad(manifest.backup_id)
        )
    except DecryptionError:
        raise BackupDamagedError(
            f"backup was modified: its key does not unwrap under {manifest.kek_id}"
        ) from None
    except KeyProviderError as exc:
        raise BackupError(f"cannot open this backup without its KEK: {exc}") from None


def _check_body(
    handle: IO[bytes], manifest: Manifest, key: bytes, progress: Progress | None
) -> None:
    counts: dict[str, int] = {}
    for table, values in _entries(_plaintext(handle, manifest, key)):
        if values is None:
            if table in counts:
                raise BackupDamagedError(f"backup was modified: table {table} appears twice")
            counts[table] = 0
            continue
        counts[table] += 1
        done = sum(counts.values())
        if progress and done % _BATCH == 0:
            progress("Verifying", done, manifest.rows)
    if counts != dict(manifest.tables):
        raise BackupDamagedError("backup was modified: its tables differ from its manifest")
    if progress:
        progress("Verifying", manifest.rows, manifest.rows)


def _plaintext(handle: IO[bytes], manifest: Manifest, key: bytes) -> Iterator[bytes]:
    """The body's chunks, each authenticated in its place, or :class:`BackupDamagedError`
    naming what is wrong with the file."""
    digest = manifest.digest()
    body = _Body(handle, manifest)
    frames = body.frames()
    index = 0
    for blob, last in frames:
        try:
            plaintext = open_sealed(key, blob, aad=_chunk_aad(digest, index, last))
        except DecryptionError:
            raise _damage(body, frames, key, blob, index=index, last=last) from None
        yield plaintext
        index += 1
    if index == 0:
        raise BackupDamagedError("backup is truncated")
    if not body.matches_checksum():
        raise BackupDamagedError("backup was modified: the checksum in its manifest differs")


class _Body:
    """The framed chunks after the manifest, hashed as they are read."""

    def __init__(self, handle: IO[bytes], manifest: Manifest) -> None:
        self._handle = handle
        self.manifest = manifest
        self._sha = hashlib.sha256()

    def frames(self) -> Iterator[tuple[bytes, bool]]:
        """``(sealed chunk, whether the file ends after it)``."""
        limit = self.manifest.chunk_size + _SEAL_OVERHEAD
        header = self._handle.read(4)
        while header:
            if len(header) < 4:
                raise BackupDamagedError("backup is truncated")
            size = int.from_bytes(header, "big")
            if not _SEAL_OVERHEAD <= size <= limit:
                raise BackupDamagedError("backup was modified: a chunk has an impossible length")
            blob = self._handle.read(size)
            if len(blob) < size:
                raise BackupDamagedError("backup is truncated")
            self._sha.update(header + blob)
            header = self._handle.read(4)
            yield blob, not header

    def matches_checksum(self) -> bool:
        """Whether what was read so far hashes to the manifest's checksum of the body."""
        return hmac.compare_digest(self._sha.hexdigest(), self.manifest.body_sha256)


def _damage(
    body: _Body,
    rest: Iterator[tuple[bytes, bool]],
    key: bytes,
    blob: bytes,
    *,
    index: int,
    last: bool,
) -> BackupDamagedError:
    """Why chunk ``index`` does not authenticate, in words an operator can act on."""
    with suppress(DecryptionError):
        open_sealed(key, blob, aad=_chunk_aad(body.manifest.digest(), index, not last))
        if last:
            return BackupDamagedError(f"backup is truncated: it ends after chunk {index + 1}")
        return BackupDamagedError("backup was modified: data follows its last chunk")
    try:
        for _ in rest:  # hash the rest: an intact body means the manifest was changed
            pass
    except BackupDamagedError:
        return BackupDamagedError(f"backup was modified: chunk {index + 1} was changed")
    if body.matches_checksum():
        return BackupDamagedError("backup was modified: its manifest was changed")
    return BackupDamagedError(f"backup was modified: chunk {index + 1} was changed or moved")


def _entries(chunks: Iterable[bytes]) -> Iterator[tuple[str, list[Any] | None]]:
    """``(table, None)`` where a table's section starts, then ``(table, values)`` per row."""
    buffer = b""
    table: str | None = None
    width = 0
    for chunk in chunks:
        lines = (buffer + chunk).split(b"\n")
        buffer = lines.pop()
        for line in lines:
            try:
                doc = json.loads(line)
                if isinstance(doc, dict):
                    table, width = _text(doc["table"]), len(doc["columns"])
                    yield table, None
                    continue
            except (KeyError, TypeError, ValueError):
                pass
            else:
                if isinstance(doc, list) and table is not None and len(doc) == width:
                    yield table, doc
                    continue
            raise BackupError("backup does not fit this format: a line is not a table or a row")
    if buffer:
        raise BackupError("backup does not fit this format: it ends inside a row")


# -- restoring ----------------------------------------------------------------------------------


def restore_backup(
    path: Path,
    *,
    db: Database,
    resolve_kek: KekResolver,
    clock: Clock,
    caller: Caller,
    progress: Progress | None = None,
) -> Manifest:
    """Restore ``path`` into ``db``, which must hold no Sparekey data (a fresh data directory, or
    an empty PostgreSQL database).

    Nothing is written until the whole backup has been verified and found to match this code's
    schema; then the schema is migrated and every row inserted in one transaction (foreign-key
    order), PostgreSQL's id sequences moved past the restored ids, and ``backup.restored``
    recorded. Refused restores change nothing.
    """
    with _open(path) as (manifest, handle):
        _require_empty(db)
        key = _unwrap(kek_keyring(resolve_kek), manifest)
        body = handle.tell()
        _check_body(handle, manifest, key, progress)
        head = db.head_revision()
        if manifest.schema_revision != head:
            raise BackupError(
                f"backup has schema revision {manifest.schema_revision} and this Sparekey "
                f"{head}; restore it with Sparekey {manifest.sparekey_version}, then upgrade"
            )
        handle.seek(body)
        try:
            db.migrate()
        except CommandError as exc:
            raise BackupError(f"cannot bring {_where(db)} to schema {head}: {exc}") from None
        with db.write() as conn:
            _require_empty(db, conn)
            for name in SEEDED_TABLES:
                conn.execute(delete(metadata.tables[name]))
            _load(conn, _plaintext(handle, manifest, key), manifest, progress)
            if db.engine.dialect.name == "postgresql":
                _reset_sequences(conn)
    if db.is_sqlite and db.url.database:
        os.chmod(db.url.database, 0o600)
    _record_restored(db, resolve_kek, clock, caller, manifest)
    return manifest


def _where(db: Database) -> str:
    if db.is_sqlite:
        return str(db.url.database)
    return db.url.render_as_string(hide_password=True)


def _require_empty(db: Database, conn: Connection | None = None) -> None:
    """Refuse a target holding any Sparekey row (seeded tables aside)."""
    if conn is None:
        if db.is_sqlite and not (db.url.database and Path(db.url.database).exists()):
            return  # not even created: do not create it before the backup is verified
        with db.read() as reading:
            _require_empty(db, reading)
        return
    present = set(inspect(conn).get_table_names())
    held = {
        table.name: rows
        for table in metadata.sorted_tables
        if table.name in present
        and table.name not in SEEDED_TABLES
        and (rows := _row_count(conn, table))
    }
    if held:
        summary = ", ".join(f"{rows} in {name}" for name, rows in held.items())
        raise BackupError(
            f"{_where(db)} already holds Sparekey data ({summary}); restore only into a fresh "
            "data directory or an empty database"
        )


def _load(
    conn: Connection, chunks: Iterable[bytes], manifest: Manifest, progress: Progress | None
) -> None:
    table: Table | None = None
    columns: list[Column[Any]] = []
    kinds: list[_Kind] = []
    batch: list[dict[str, object]] = []
    done = 0

    def flush() -> None:
        if table is not None and batch:
            conn.execute(insert(table), batch)
        batch.clear()

    for name, values in _entries(chunks):
        if values is None:
            flush()
            table = metadata.tables.get(name)
            if table is None:
                raise BackupError(f"backup holds table {name}, which this Sparekey does not have")
            columns = list(table.columns)
            kinds = [_kind(column) for column in columns]
            continue
        batch.append(
            {
                column.name: _decode(kind, column, value)
                for column, kind, value in zip(columns, kinds, values, strict=True)
            }
        )
        done += 1
        if table is not None and len(batch) >= _batch_size(table):
            flush()
            if progress:
                progress("Restoring", done, manifest.rows)
    flush()
    if progress:
        progress("Restoring", done, manifest.rows)


def _reset_sequences(conn: Connection) -> None:
    """Move each id sequence past the restored ids, so the next insert does not collide."""
    for table in metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        highest = func.max(column)
        sequence = func.pg_get_serial_sequence(table.name, column.name)
        conn.execute(select(func.setval(sequence, func.coalesce(highest, 1), highest.is_not(None))))


def _record_restored(
    db: Database, resolve_kek: KekResolver, clock: Clock, caller: Caller, manifest: Manifest
) -> None:
    """Record ``backup.restored`` with the restored MAC key, read back as every process reads
    it; just after the restore commits, since the keys must be committed to be read."""
    keyring = Keyring(store=SqlKeyStore(db, clock), resolve=resolve_kek)
    auditor = Auditor(db=db, keyring=keyring, clock=clock)
    details = {
        "backup_id": manifest.backup_id,
        "backup_created_at": manifest.created_at.isoformat(),
        "rows": manifest.rows,
        "source": manifest.dialect,
    }
    with db.write() as conn:
        auditor.record(conn, AuditEntry(event="backup.restored", details=details), caller)
