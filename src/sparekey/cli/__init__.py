"""The ``sparekey`` command."""
