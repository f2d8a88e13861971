"""Fixtures of the scale-out suite (`make test-scaleout`): real PostgreSQL and Redis on loopback (services.py)."""

from __future__ import annotations

import pytest

from tests.scaleout.services import start_postgres, start_redis


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL cluster for the suite; each test takes its own database (``postgres.create_database``)."""
    pg = start_postgres()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def redis_server():
    server = start_redis()
    yield server
    server.stop()
