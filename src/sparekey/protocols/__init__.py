"""Pure protocol code: no I/O, no clock, no settings.

Every function takes what it needs (keys, counters, ``now``) as arguments.
"""
