"""ADBC PostgreSQL connections from one database object per source, opened ahead of the read.

ADBC reads a PostgreSQL window only when the binary COPY reader (`pg_copy`) is not built, is
switched off, or meets a column type it does not decode; what follows is about those loads.

Opening an ADBC PostgreSQL *database* object reads the server's type catalog (~30 ms on
loopback); connections made from one database object share it and open in ~5 ms. A load opens
two (the snapshot and the count that runs beside it) and a chunked load one per chunk, and an
hourly load of a few rows is mostly such fixed costs. So each source URI gets one database
object, started on a thread as soon as a load describes its table (`warm`), which overlaps the
catalog read with reflection and the fence probe; it is replaced after `MAX_AGE_S`, so types
created on the server since (an enum, a domain) are seen by later loads. The database object is
shared through adbc_driver_manager's reference-counted holder, whose count this cache keeps
above zero; without that holder (another driver-manager version) every connection opens its
own database, as before.
"""

from __future__ import annotations

import atexit
import threading
import time
from concurrent.futures import Future
from typing import Any

#: Seconds a database object (and the type catalog it read) serves new connections.
MAX_AGE_S = 60.0

_lock = threading.Lock()
_databases: dict[str, tuple[float, Future[Any]]] = {}


def warm(uri: str) -> None:
    """Start opening the database object for `uri` if none is fresh (returns at once)."""
    _database(uri)


def connect(uri: str) -> Any:
    """A DB-API connection (autocommit off) sharing `uri`'s database object."""
    import adbc_driver_manager
    import adbc_driver_manager.dbapi as dbapi
    import adbc_driver_postgresql.dbapi as pg

    if not hasattr(dbapi, "_SharedDatabase"):
        return pg.connect(uri, autocommit=False)
    try:
        shared = _database(uri).result()
    except Exception:
        _forget(uri)  # the next load tries again; this one reports the driver's own error
        return pg.connect(uri, autocommit=False)
    return dbapi.Connection(shared, adbc_driver_manager.AdbcConnection(shared._db), autocommit=False)


def _database(uri: str) -> Future[Any]:
    now = time.monotonic()
    with _lock:
        entry = _databases.get(uri)
        if entry is not None and now - entry[0] < MAX_AGE_S and not _failed(entry[1]):
            return entry[1]
        future: Future[Any] = Future()
        _databases[uri] = (now, future)
    if entry is not None:
        _release(entry[1])  # closed once its last connection closes
    threading.Thread(target=_open, args=(uri, future), name="delta-pg-database", daemon=True).start()
    return future


def _open(uri: str, future: Future[Any]) -> None:
    try:
        import adbc_driver_manager.dbapi as dbapi
        import adbc_driver_postgresql

        future.set_result(dbapi._SharedDatabase(adbc_driver_postgresql.connect(uri)))
    except BaseException as exc:  # handed to connect(), which falls back
        future.set_exception(exc)


def _failed(future: Future[Any]) -> bool:
    return future.done() and future.exception() is not None


def _forget(uri: str) -> None:
    with _lock:
        entry = _databases.pop(uri, None)
    if entry is not None:
        _release(entry[1])


def _release(future: Future[Any]) -> None:
    """Give up the cache's reference to a database object (after it finished opening)."""
    future.add_done_callback(lambda f: f.exception() is None and f.result().close())


@atexit.register
def _close_all() -> None:
    with _lock:
        entries = list(_databases.values())
        _databases.clear()
    for _, future in entries:
        if future.done() and future.exception() is None:
            future.result().close()
