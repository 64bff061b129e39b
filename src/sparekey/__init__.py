"""Sparekey: a two-factor authentication server whose backup and recovery are first-class."""

__version__ = "0.2.0"
