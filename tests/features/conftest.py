"""Fixtures of the feature-store tests (the Redis server is in tests/conftest.py)."""
