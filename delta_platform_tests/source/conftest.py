"""Fixtures of the source tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa


@pytest.fixture
def maria(mariadb_admin: sa.Engine, mariadb_schema: str) -> Iterator[sa.Engine]:
    """An engine on this test's own MariaDB schema."""
    engine = sa.create_engine(mariadb_admin.url.set(database=mariadb_schema))
    try:
        yield engine
    finally:
        engine.dispose()
