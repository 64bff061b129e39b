"""`sparekey serve` keeps the garbage collector off the objects alive when it starts.

A full collection traverses every object the collector tracks; a server's modules, classes and
schemas are some 200,000 of them, which took about 100 ms a collection, every request waiting.
"""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from sparekey.api import create_app
from sparekey.runtime import Sparekey


def test_what_startup_made_is_frozen_while_serving_and_thawed_at_shutdown(
    sparekey: Sparekey,
) -> None:
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(sparekey, freeze_startup_objects=True)) as client:
        frozen = gc.get_freeze_count()
        assert frozen > 50_000, "the application's modules, classes and schemas"
        assert client.get("/healthz").status_code == 200
        gc.collect()  # traverses only what came after; frozen objects that died are freed
        assert gc.get_freeze_count() > frozen * 0.9
        assert len(gc.get_objects(generation=2)) < frozen / 10
    assert gc.get_freeze_count() == 0


def test_an_application_in_someone_elses_process_freezes_nothing(sparekey: Sparekey) -> None:
    with TestClient(create_app(sparekey)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() == 0
