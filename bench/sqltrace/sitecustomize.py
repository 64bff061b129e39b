"""Counts the SQL statements a server runs on SQLite, for the benchmarks' statements per request.

A server started with this folder first on ``PYTHONPATH`` and ``BENCH_SQL_TRACE`` naming a file
imports this module at start-up (Python imports ``sitecustomize`` by itself). It hooks the new
SQLite connections of every SQLAlchemy engine and, through SQLite's trace callback, appends one
line per statement SQLite runs to that file: the process id, who ran it (the thread's name, or on
an event loop the running task's, so that work a server does on its loop besides requests, such as
sealing the audit log, is told apart), the statement's first keyword and the tables it names.
Statements sent straight to the driver's cursor (Sparekey's prepared hot path) are counted as well,
and so are ``BEGIN`` and ``COMMIT``.

Only the keyword and the table are written, never the statement's text: SQLite hands the callback
the statement with its values filled in, and those may be codes or sealed secrets.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import threading
from typing import Any

_TABLE = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+[\"`\[]?(\w+)", re.IGNORECASE)


def _install(path: str) -> None:
    # Imported here: a server that is not traced pays nothing.
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    lock = threading.Lock()

    def trace(statement: str) -> None:
        words = statement.split(None, 1)
        keyword = words[0].upper() if words else "?"
        tables = "+".join(dict.fromkeys(_TABLE.findall(statement))) or "-"
        line = f"{os.getpid()}\t{_runner()}\t{keyword}\t{tables}\n"
        with lock, open(path, "a", encoding="utf-8") as out:
            out.write(line)

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(trace)

    event.listen(Engine, "connect", on_connect)


def _runner() -> str:
    """The running asyncio task's name if it has one of its own, else the thread's."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop in this thread
        task = None
    name = task.get_name() if task is not None else ""
    return name if name and not name.startswith("Task-") else threading.current_thread().name


if os.environ.get("BENCH_SQL_TRACE"):
    _install(os.environ["BENCH_SQL_TRACE"])
