"""Crash points: named places where a test may have this process killed outright.

Crash-consistency tests start a real ``sparekey serve``, ``sparekey worker`` or ``sparekey keys
rotate-dek`` with the environment variable ``SPAREKEY_CRASH_AT`` naming one point: ``NAME`` kills
the process at the point's first hit, ``NAME:N`` at its N-th hit (counted over all the process's
threads). There the process sends itself SIGKILL: nothing is flushed, no ``finally`` block, exit
handler or shutdown hook runs, and an open transaction is left for the database to roll back, as
when the kernel's out-of-memory killer ends a server. The test then restarts the program without
the variable on the same database and checks what survived.

Like FoundationDB's BUGGIFY or CockroachDB's testing knobs, this is a documented test hook that is
inert in production: the variable is read once, when this module is imported, and without it
:func:`crashpoint` costs one global lookup. A process started with it says so on stderr, and a
name that is not in :data:`CRASH_POINTS` stops it at start-up, so that a misspelt test fails at
once instead of never crashing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CRASH_POINTS", "ENVIRONMENT_VARIABLE", "CrashPointError", "crashpoint"]

ENVIRONMENT_VARIABLE = "SPAREKEY_CRASH_AT"

CRASH_POINTS: Mapping[str, str] = {
    "verify.before_commit": "an OTP or email/SMS code matched: its step is recorded and the "
    "success audited, not yet committed",
    "verify.committed": "any accepted code (OTP, email/SMS or backup code) is committed; the "
    "answer is not sent yet",
    "backup_code.before_commit": "a backup code is marked used and audited, not yet committed",
    "backup_code.committed": "a backup code's use is committed; the answer is not sent yet",
    "keys.reencrypt.resealed": "one secret is resealed under the new data key inside a batch's "
    "transaction, not yet committed",
    "keys.reencrypt.batch_committed": "a batch of re-encrypted secrets is committed; the next "
    "batch has not begun",
    "notify.sent": "the receiver accepted a notification (webhook answered, SMTP took the mail); "
    "it is not yet marked delivered",
    "notify.marked": "a sent notification is marked delivered and committed",
    "recovery.state_updated": "a recovery case's state UPDATE ran; its audit record is not "
    "inserted yet",
    "recovery.before_commit": "a recovery step is fully written (state, audit, approvals, factors, "
    "codes), not yet committed",
    "recovery.committed": "a recovery step is committed; the answer is not sent yet",
}


class CrashPointError(ValueError):
    """``SPAREKEY_CRASH_AT`` names no crash point, or an invalid hit number."""


@dataclass(frozen=True)
class _Target:
    name: str
    hit: int


def _parse(value: str) -> _Target:
    name, _, count = value.strip().partition(":")
    if name not in CRASH_POINTS:
        raise CrashPointError(
            f"{ENVIRONMENT_VARIABLE}={value!r}: no crash point named {name!r}; "
            f"the points are {', '.join(sorted(CRASH_POINTS))}"
        )
    if not count:
        return _Target(name, 1)
    if not count.isdigit() or int(count) < 1:
        raise CrashPointError(
            f"{ENVIRONMENT_VARIABLE}={value!r}: the hit after ':' must be a whole number from 1"
        )
    return _Target(name, int(count))


def _armed() -> _Target | None:
    value = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if not value:
        return None
    target = _parse(value)
    sys.stderr.write(
        f"{ENVIRONMENT_VARIABLE} is set: this process kills itself at hit {target.hit} of crash "
        f"point {target.name} (a test hook; never set it in production)\n"
    )
    return target


_TARGET = _armed()
_hits = 0
_lock = threading.Lock()


def crashpoint(name: str) -> None:
    """Kill this process with SIGKILL here if ``SPAREKEY_CRASH_AT`` names this hit of ``name``."""
    if _TARGET is None or _TARGET.name != name:
        return
    global _hits
    with _lock:
        _hits += 1
        if _hits != _TARGET.hit:
            return
        os.kill(os.getpid(), signal.SIGKILL)
