"""Session fixtures: real servers, started once (moto's threaded server, PostgreSQL, MariaDB)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("DELTA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN_URL = os.environ.get("DELTA_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_or_skip(url: str, name: str) -> sa.Engine:
    """In CI a missing server fails the test; on a laptop it skips with the reason."""
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable"
        if IN_CI:
            pytest.fail(f"{name} is required in CI but unreachable at {url}: {exc}")
        pytest.skip(f"{name} unreachable at {url}: {exc}")
    return engine


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's threaded HTTP server on loopback; boto3 and pyarrow reach it by endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    old = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def pg_admin() -> sa.Engine:
    return _server_or_skip(PG_ADMIN_URL, "PostgreSQL")


@pytest.fixture(scope="session")
def mariadb_admin() -> sa.Engine:
    return _server_or_skip(MARIADB_ADMIN_URL, "MariaDB")


@pytest.fixture
def pg_schema(pg_admin: sa.Engine) -> Iterator[str]:
    """A fresh schema per test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{name}"'))
    try:
        yield name
    finally:
        with pg_admin.begin() as conn:
            conn.execute(sa.text(f'drop schema "{name}" cascade'))


@pytest.fixture
def mariadb_schema(mariadb_admin: sa.Engine) -> Iterator[str]:
    """A fresh database (MariaDB's schema) per test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with mariadb_admin.begin() as conn:
        conn.execute(sa.text(f"create database `{name}`"))
    try:
        yield name
    finally:
        with mariadb_admin.begin() as conn:
            conn.execute(sa.text(f"drop database `{name}`"))
