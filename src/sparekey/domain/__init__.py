"""Frozen domain records, the error tree and the ports that services depend on."""
