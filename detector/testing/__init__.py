"""Helpers for running the detector against real servers.

:mod:`detector.testing.services` starts a Kafka (KRaft) broker and a redis-server on loopback;
``tests/conftest.py`` wraps them as pytest fixtures.
"""
