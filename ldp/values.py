"""Map what the machine says about itself onto the schema's fixed vocabularies.

Every function returns a name from a fixed table in this module (or from the domain it is
given), and ``"other"`` for anything it does not recognise: a raw platform string, a kernel
build tag or a custom version suffix never passes through. None of them raises.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Collection
from typing import Final

from ldp.schema import OTHER

__all__ = ["arch_value", "os_value", "platform_value", "version_bucket"]

_OS: Final = {
    "linux": "linux",
    "darwin": "macos",
    "windows": "windows",
    "freebsd": "freebsd",
    "openbsd": "openbsd",
    "netbsd": "netbsd",
    "dragonfly": "dragonfly",
    "sunos": "solaris",
    "aix": "aix",
    "android": "android",
    "ios": "ios",
}
# POSIX layers on Windows report e.g. "CYGWIN_NT-10.0-19045": the machine runs Windows.
_WINDOWS_PREFIXES: Final = ("cygwin", "msys", "mingw")

_ARCH: Final = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "em64t": "x86_64",
    "arm64": "arm64",
    "arm64e": "arm64",
    "aarch64": "arm64",
    "aarch64_be": "arm64",
    "armv8b": "arm64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "i86pc": "x86",
    "x86": "x86",
    # 32-bit ARM user space (armv8l is a 32-bit process on a 64-bit core).
    "arm": "arm",
    "armv6l": "arm",
    "armv7": "arm",
    "armv7l": "arm",
    "armv7a": "arm",
    "armv8l": "arm",
    "riscv64": "riscv64",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "loongarch64": "loongarch64",
    "mips64": "mips64",
}

_VERSION: Final = re.compile(r"\s*[vV]?(\d{1,9})\.(\d{1,9})(?!\d)", re.ASCII)


def _probe(read: Callable[[], object]) -> object:
    try:
        return read()
    except Exception:  # platform probes shell out on some systems; never let that escape
        return None


def _key(raw: object) -> str:
    return raw.strip().lower() if isinstance(raw, str) else ""


def os_value(system: object = None) -> str:
    """Operating system family: ``platform.system()`` (or ``system``) mapped to a fixed name."""
    key = _key(_probe(platform.system) if system is None else system)
    if key.startswith(_WINDOWS_PREFIXES):
        return "windows"
    return _OS.get(key, OTHER)


def arch_value(machine: object = None) -> str:
    """CPU architecture: ``platform.machine()`` (or ``machine``) mapped to a fixed name."""
    key = _key(_probe(platform.machine) if machine is None else machine)
    return _ARCH.get(key, OTHER)


def version_bucket(version: object, domain: Collection[str]) -> str:
    """The ``major.minor`` bucket of ``version`` if ``domain`` lists it, else ``"other"``.

    ``"1.4.2rc1"`` -> ``"1.4"``; leading zeros are dropped (``"01.04"`` -> ``"1.4"``); a version
    without a minor part, or anything that is not a string, is ``"other"``.
    """
    if not isinstance(version, str):
        return OTHER
    match = _VERSION.match(version)
    if match is None:
        return OTHER
    bucket = f"{int(match[1])}.{int(match[2])}"
    return bucket if bucket in domain else OTHER


def platform_value(system: object = None, machine: object = None) -> str:
    """``"<os>-<arch>"`` of this machine (schema v2's joint ``platform`` field).

    Built from :func:`os_value` and :func:`arch_value`, so it only ever joins two names from
    this module's tables; a pair the schema does not list becomes ``other`` when it is indexed.
    """
    return f"{os_value(system)}-{arch_value(machine)}"
