"""How long a full garbage collection stops `sparekey serve`, with and without its startup objects
frozen.

Builds the HTTP application as `serve` does (SQLite in a temporary directory), then times full
collections (`gc.collect()`) while every object is tracked, and again after `gc.freeze()`, as
`serve` does once it has started.

    .venv/bin/python bench/startup_gc.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sparekey.api import create_app
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import load_settings


def full_collections(rounds: int) -> list[float]:
    """Milliseconds of each of ``rounds`` full collections."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import uvicorn.protocols.http.httptools_impl  # noqa: F401  (what serve has loaded too)
    import uvloop  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="sparekey-gc-") as folder:
        settings = load_settings(Path(folder))
        initialize(settings)
        app = Sparekey.open(settings)
        try:
            api = create_app(app, seal_interval=1.0)
            api.openapi()  # built on the first request for the document
            gc.collect()
            tracked = len(gc.get_objects())
            before = full_collections(args.rounds)
            gc.freeze()
            try:
                frozen = gc.get_freeze_count()
                after = full_collections(args.rounds)
            finally:
                gc.unfreeze()
        finally:
            app.close()
    print(f"objects tracked after startup: {tracked:,}")
    print(
        f"full collection, all tracked:   median {statistics.median(before):7.2f} ms"
        f"  ({', '.join(f'{t:.1f}' for t in before)})"
    )
    print(
        f"full collection, {frozen:,} frozen: median {statistics.median(after):7.2f} ms"
        f"  ({', '.join(f'{t:.2f}' for t in after)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
