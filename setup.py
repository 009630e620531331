"""Build of the optional C extension; the rest of the configuration lives in pyproject.toml.

`delta_platform.source._mysql_binary` reads MySQL/MariaDB windows over the binary protocol
(see delta_platform/source/mysql_binary.py). It needs the MariaDB Connector/C (or libmysqlclient)
headers and library, the same ones mysqlclient (the `mysql-fast` extra) builds against. The build
is optional: when the headers or the library are missing, or compiling fails, the install still
succeeds with a warning and MySQL windows are read the portable way. Set
DELTA_PLATFORM_NO_EXT=1 to skip the extension on purpose.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_EXT = "delta_platform.source._mysql_binary"


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
    """build_ext that warns instead of failing: the extension only makes reads faster."""

    def run(self) -> None:
        if os.environ.get("DELTA_PLATFORM_NO_EXT") == "1":
            self._warn("skipped (DELTA_PLATFORM_NO_EXT=1)")
            return
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure leaves the portable path
            self._warn(f"could not be built ({exc})")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(f"could not be built ({exc})")

    def _warn(self, why: str) -> None:
        print(
            f"WARNING: optional extension {_EXT} {why}; MySQL/MariaDB windows are read without it. "
            "Install the client headers (apt-get install libmariadb-dev pkg-config) to build it.",
            file=sys.stderr,
        )


def _extensions() -> list[Extension]:
    if os.environ.get("DELTA_PLATFORM_NO_EXT") == "1":
        return []
    incs, libdirs, libs, extra = _client_flags()
    return [
        Extension(
            _EXT,
            sources=["delta_platform/source/_mysql_binary.c"],
            include_dirs=incs,
            library_dirs=libdirs,
            libraries=libs,
            extra_compile_args=["-O2", *extra],
            optional=True,
        )
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
