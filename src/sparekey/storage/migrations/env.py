"""Alembic environment: runs migrations on the connection Sparekey hands over.

That connection holds the migration lock (storage/database.py): PostgreSQL's advisory lock, or
SQLite's write lock in a transaction of the caller's that these migrations run inside.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from sparekey.storage.tables import metadata

connection = context.config.attributes["connection"]
assert isinstance(connection, Connection)

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
