"""Helpers of the experiments tests (users and models: tests/conftest.py)."""

LOCALISATION = {"kind": "sample-localisation", "subset": {"mode": "first", "n": 3}}
