"""Envelope encryption and the key providers that hold the key-encryption key."""
