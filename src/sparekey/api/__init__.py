"""The HTTP API: routers, schemas, and the one place that maps domain errors to HTTP."""

from sparekey.api.app import create_app

__all__ = ["create_app"]
