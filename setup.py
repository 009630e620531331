"""Build of the optional C extensions; the rest of the configuration lives in pyproject.toml.

`delta_platform.source._mysql_binary` reads MySQL/MariaDB windows over the binary protocol
(see delta_platform/source/mysql_binary.py). It needs the MariaDB Connector/C (or libmysqlclient)
headers and library, the same ones mysqlclient (the `mysql-fast` extra) builds against.
`delta_platform.source._pg_copy` reads PostgreSQL windows as binary COPY (see
delta_platform/source/pg_copy.py); it needs libpq's headers and library (libpq-dev). Both builds
are optional: when the headers or the library are missing, or compiling fails, the install still
succeeds with a warning and those windows are read the portable way (pymysql / ADBC). Set
DELTA_PLATFORM_NO_EXT=1 to skip the extensions on purpose.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_HEADERS = {  # what to install when an extension cannot be built
    "delta_platform.source._mysql_binary": "apt-get install libmariadb-dev pkg-config",
    "delta_platform.source._pg_copy": "apt-get install libpq-dev",
}


def _libpq_flags() -> tuple[list[str], list[str]]:
    """(include dirs, library dirs) of libpq, from pg_config when it is there."""
    incs, libdirs = ["/usr/include/postgresql"], []
    if shutil.which("pg_config"):
        try:
            incs = [_run(["pg_config", "--includedir"])]
            libdirs = [_run(["pg_config", "--libdir"])]
        except (OSError, subprocess.SubprocessError):
            pass
    return incs, libdirs


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def _client_flags() -> tuple[list[str], list[str], list[str], list[str]]:
    """(include dirs, library dirs, libraries, extra compile args) of the MySQL client library."""
    for cmd in (
        ["pkg-config", "--cflags", "--libs", "libmariadb"],
        ["mariadb_config", "--cflags", "--libs"],
        ["pkg-config", "--cflags", "--libs", "mysqlclient"],
        ["mysql_config", "--cflags", "--libs"],
    ):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        incs, libdirs, libs, extra = [], [], [], []
        for flag in shlex.split(out.replace("\n", " ")):
            if flag.startswith("-I"):
                incs.append(flag[2:])
            elif flag.startswith("-L"):
                libdirs.append(flag[2:])
            elif flag.startswith("-l"):
                libs.append(flag[2:])
        if libs:
            return incs, libdirs, libs, extra
    return ["/usr/include/mariadb", "/usr/include/mysql"], [], ["mariadb"], []


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the extensions only make reads faster."""

    def run(self) -> None:
        if os.environ.get("DELTA_PLATFORM_NO_EXT") == "1":
            print("WARNING: optional extensions skipped (DELTA_PLATFORM_NO_EXT=1)", file=sys.stderr)
            return
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure leaves the portable path
            print(f"WARNING: optional extensions could not be built ({exc})", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(
                f"WARNING: optional extension {ext.name} could not be built ({exc}); its windows are "
                f"read the portable way. Install the headers ({_HEADERS.get(ext.name)}) to build it.",
                file=sys.stderr,
            )


def _reader(name: str, incs: list[str], libdirs: list[str], libs: list[str], extra: list[str]) -> Extension:
    """One optional C reader: delta_platform/source/<name>.c with the shared Arrow buffers."""
    return Extension(
        f"delta_platform.source.{name}",
        sources=[f"delta_platform/source/{name}.c"],
        depends=["delta_platform/source/_arrow_out.h"],
        include_dirs=incs,
        library_dirs=libdirs,
        libraries=libs,
        extra_compile_args=["-O2", *extra],
        optional=True,
    )


def _extensions() -> list[Extension]:
    if os.environ.get("DELTA_PLATFORM_NO_EXT") == "1":
        return []
    incs, libdirs, libs, extra = _client_flags()
    pq_incs, pq_libdirs = _libpq_flags()
    return [
        _reader("_mysql_binary", incs, libdirs, libs, extra),
        _reader("_pg_copy", pq_incs, pq_libdirs, ["pq"], []),
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
