"""Values that break naive readers, shared by every reader suite (MySQL packed and binary,
PostgreSQL binary COPY): each suite round-trips the whole list its database can hold."""

from __future__ import annotations

import datetime as dt

#: Text values that break naive readers: separators, quotes, escapes, NUL, 4-byte UTF-8, lookalikes.
TEXTS: list[str | None] = [
    '',
    None,
    'a,b',
    '"quoted"',
    '""',
    'line\nbreak',
    'cr\r\nlf',
    'back\\slash',
    'trailing\\',
    '\\N',
    'NULL',
    'null',
    'ünïcødé 🎉 中文',
    ' lead and trail ',
    '\t',
    ',',
    '"',
    "'",
    '1e5',
    'NaN',
    'nul\x00byte',
    'ünïcødé 🎉 中文 𝄞',
    '?',
    '%s %%',
]
#: Binary values that break naive readers: every byte, quotes, separators, NUL, invalid UTF-8.
BYTES = [b"", None, bytes(range(256)), b'"', b"\n", b"\x00", b'a,"b"\r\n', b"\\", b"\xff\xfe"]

#: Dates at the ends of the range and around both epochs (1970 for Arrow, 2000 for PostgreSQL).
DATES = [
    dt.date(1, 1, 1),
    dt.date(9999, 12, 31),
    dt.date(1969, 12, 31),
    dt.date(2024, 2, 29),
    dt.date(1970, 1, 1),
    dt.date(2000, 1, 1),
    None,
]
#: Wall-clock datetimes likewise, with microseconds at both ends and a DST-gap time of day.
DATETIMES = [
    dt.datetime(1, 1, 1),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
    dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
    dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
    dt.datetime(2000, 1, 1),
    dt.datetime(2024, 2, 29, 12, 0, 0, 123456),
    dt.datetime(2024, 3, 31, 1, 30, 0, 1),
    None,
]
