"""Sparekey: a two-factor authentication server whose backup and recovery are first-class."""

__version__ = "0.3.0.dev0"
