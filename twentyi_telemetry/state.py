"""Where 20i telemetry keeps its files, and the small file primitives every cli module shares.

Consent lives in the user config dir; the secret, epoch memo, tally, sent log and spool live
in ``telemetry`` folders of the user state and cache dirs (platformdirs). Nothing here ever
uses the working directory or a project, and nothing here may import numpy, httpx or
cryptography: a host command's ``record()`` goes through this module.

No telemetry path may ever block: every file is opened with :func:`open_regular`, which never
waits (``O_NONBLOCK``: a FIFO or a socket put where a file belongs fails at once instead of
hanging the host) and accepts only regular files. Files we write into our own folders are
opened without following a symbolic link there (``O_NOFOLLOW``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from twentyi_telemetry.errors import StateError

__all__ = [
    "APP_NAME",
    "SECRET_BYTES",
    "SPOOL_SUFFIX",
    "Paths",
    "count_spooled",
    "ensure_dir",
    "ensure_secret",
    "load_secret",
    "open_regular",
    "purge",
    "read_small",
    "regular_or_absent",
    "write_atomic",
]

APP_NAME = "20i"
#: Our own folder inside the app's state and cache dirs, so ``--purge`` never touches files
#: that the host tool keeps there for itself.
SUBDIR = "telemetry"
SECRET_BYTES = 32
#: One sealed report per spool file, named ``<anything>.sealed`` (issue 6 writes them).
SPOOL_SUFFIX = ".sealed"
#: Files this small are all we ever read on the host path; anything larger is not ours.
MAX_SMALL_FILE = 64 * 1024
#: Flags that make an ``open`` never wait and never leak into a child process; absent ones
#: (Windows has no O_NONBLOCK, O_NOFOLLOW or O_CLOEXEC) are 0.
_NEVER_WAIT = (
    getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class Paths:
    """Every location telemetry uses; pass one in tests to point everything at ``tmp_path``.

    A plain class rather than a dataclass: building a dataclass costs about a millisecond at
    import time, and every host command imports this module.
    """

    __slots__ = ("cache_dir", "config_dir", "state_dir")

    def __init__(self, config_dir: Path, state_dir: Path, cache_dir: Path) -> None:
        self.config_dir = config_dir
        self.state_dir = state_dir
        self.cache_dir = cache_dir

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Paths):
            return NotImplemented
        return (self.config_dir, self.state_dir, self.cache_dir) == (
            other.config_dir,
            other.state_dir,
            other.cache_dir,
        )

    def __hash__(self) -> int:
        return hash((self.config_dir, self.state_dir, self.cache_dir))

    def __repr__(self) -> str:
        return f"Paths({self.config_dir!r}, {self.state_dir!r}, {self.cache_dir!r})"

    @classmethod
    def default(cls) -> Paths:
        """The platform's user dirs for ``20i`` (XDG_CONFIG_HOME, XDG_STATE_HOME, ... on Linux)."""
        import platformdirs  # here, not at module level: only callers that need paths pay for it

        return cls(
            config_dir=platformdirs.user_config_path(APP_NAME, appauthor=False),
            state_dir=platformdirs.user_state_path(APP_NAME, appauthor=False) / SUBDIR,
            cache_dir=platformdirs.user_cache_path(APP_NAME, appauthor=False) / SUBDIR,
        )

    @property
    def consent_file(self) -> Path:
        """Written only by ``enable`` / ``disable``: the user's decision, with its date."""
        return self.config_dir / "telemetry-consent.json"

    @property
    def config_file(self) -> Path:
        """Optional, edited by hand: endpoint and analyzer key overrides for self-hosters."""
        return self.config_dir / "telemetry-config.json"

    @property
    def secret_file(self) -> Path:
        """32 random bytes keying the memoized (permanent) responses; never leaves the machine."""
        return self.state_dir / "secret"

    @property
    def epochs_file(self) -> Path:
        """Each field's frozen epoch response and the epochs that reported (``ldp.epochs``):
        randomized responses only, never a true value."""
        return self.state_dir / "epochs.json"

    @property
    def tally_file(self) -> Path:
        """The single-file tally of earlier releases (the journal replaced it; still read)."""
        return self.state_dir / "tally.json"

    @property
    def sent_log(self) -> Path:
        """Plaintext of every report sent, one JSON object a line (``cli.sentlog``)."""
        return self.state_dir / "sent-log.jsonl"

    @property
    def spool_dir(self) -> Path:
        """Sealed reports waiting to be sent, one ``*.sealed`` file each."""
        return self.cache_dir / "spool"

    def as_dict(self) -> dict[str, str]:
        """The paths shown by ``status`` (stable keys; see docs/CLI.md)."""
        return {
            "config_dir": str(self.config_dir),
            "consent_file": str(self.consent_file),
            "config_file": str(self.config_file),
            "state_dir": str(self.state_dir),
            "cache_dir": str(self.cache_dir),
            "spool_dir": str(self.spool_dir),
            "sent_log": str(self.sent_log),
        }


def ensure_dir(path: Path) -> None:
    """Create ``path`` and every missing parent with mode 0700; ``OSError`` if impossible.

    Each level is made here rather than by ``mkdir(parents=True)``, which would give the
    parents (``$XDG_STATE_HOME/20i`` and the like) the umask's mode, usually 0755.
    """
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        if probe.exists() or probe.is_symlink():
            raise NotADirectoryError(f"{probe} is not a directory")
        missing.append(probe)
        if probe.parent == probe:  # pragma: no cover - the root always exists
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise NotADirectoryError(f"{folder} is not a directory") from None


class NotRegularFileError(OSError):
    """Something other than a regular file (a FIFO, socket, device or folder) is in the way."""


def open_regular(
    path: Path, flags: int = os.O_RDONLY, mode: int = 0o600, follow: bool = True
) -> int:
    """Open ``path`` as a regular file, never waiting; return the file descriptor.

    ``O_NONBLOCK`` makes opening a FIFO fail or return at once (a FIFO with no writer would
    otherwise block a reader, and one with no reader a writer, forever); the ``fstat`` check
    then refuses anything that is not a regular file with :class:`NotRegularFileError`.
    ``follow=False`` refuses a symbolic link at ``path`` (``ELOOP``), for files written into
    our own folders. Raises ``OSError``.
    """
    fd = os.open(path, flags | _NEVER_WAIT | (0 if follow else _NOFOLLOW), mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def regular_or_absent(path: Path) -> bool:
    """Nothing at ``path``, or a regular file (not a FIFO, socket, folder or symlink): what a
    reader that cannot open it itself without blocking (``ldp.budget.Ledger``) checks first."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def write_atomic(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir and ``os.replace``.

    Readers see the old file or the new one, never a torn write. ``durable`` fsyncs the data
    before the rename, so a crash cannot leave an empty file. Raises ``OSError``.
    """
    ensure_dir(path.parent)
    # os.urandom, not tempfile/secrets: both import `random`, and this runs in host commands.
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode, follow=False)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask; we want exactly `mode`
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_small(path: Path) -> bytes:
    """Read a small regular file; ``FileNotFoundError`` if absent, ``OSError`` if unusable.

    Never blocks: see :func:`open_regular`.
    """
    with os.fdopen(open_regular(path), "rb") as handle:
        data = handle.read(MAX_SMALL_FILE + 1)
    if len(data) > MAX_SMALL_FILE:
        raise OSError(f"{path} is larger than {MAX_SMALL_FILE} bytes")
    return data


def load_secret(paths: Paths) -> bytes | None:
    """The local secret, or ``None`` if there is none yet; ``StateError`` if it is unusable."""
    try:
        data = read_small(paths.secret_file)
    except (FileNotFoundError, NotADirectoryError):  # no such file, or no such directory
        return None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StateError(f"cannot read the telemetry secret {paths.secret_file}: {reason}") from exc
    if len(data) != SECRET_BYTES:
        raise StateError(
            f"telemetry secret {paths.secret_file} has {len(data)} bytes, expected"
            f" {SECRET_BYTES}; remove it with `20i telemetry disable --purge`"
        )
    return data


def ensure_secret(paths: Paths) -> tuple[bytes, bool]:
    """The local secret, created (mode 0600) if missing; returns ``(secret, created)``."""
    secret = load_secret(paths)
    if secret is not None:
        return secret, False
    secret = os.urandom(SECRET_BYTES)  # the OS CSPRNG
    try:
        write_atomic(paths.secret_file, secret)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StateError(
            f"cannot write the telemetry secret {paths.secret_file}: {reason}"
        ) from exc
    return secret, True


def count_spooled(paths: Paths) -> int:
    """How many sealed reports wait in the spool (0 if the spool does not exist)."""
    try:
        with os.scandir(paths.spool_dir) as entries:
            return sum(
                1
                for entry in entries
                if entry.name.endswith(SPOOL_SUFFIX)
                and not entry.name.startswith(".")
                and entry.is_file(follow_symlinks=False)
            )
    except OSError:
        return 0


def purge(paths: Paths) -> list[Path]:
    """Delete every file in the telemetry state and cache folders; return what was removed.

    Removes files (symlinks are removed, never followed), then the emptied folders, then our
    ``20i`` folders above them if nothing else is left in them (the host tool may keep its
    own files there). A host command that was already counting when the consent changed may
    add a file meanwhile, so the walk is repeated until the folder is gone. The consent file
    and the hand-edited config are kept: the first records the opt-out itself.
    """
    removed: list[Path] = []
    for root in (paths.state_dir, paths.cache_dir):
        for attempt in range(_PURGE_PASSES):
            if _purge_tree(root, removed, last=attempt == _PURGE_PASSES - 1):
                break
        if root.name == SUBDIR:
            with contextlib.suppress(OSError):  # not empty, or not ours to remove: keep it
                root.parent.rmdir()
    return removed


_PURGE_PASSES = 5


def _purge_tree(root: Path, removed: list[Path], last: bool) -> bool:
    """One pass over ``root``; True once ``root`` no longer exists."""
    if not root.is_dir() or root.is_symlink():
        if root.is_symlink() or root.exists():
            _remove(root, removed, last)
        return not (root.is_symlink() or root.exists())
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        base = Path(dirpath)
        for name in sorted(filenames):
            _remove(base / name, removed, last)
        for name in sorted(dirnames):
            _remove(base / name, removed, last)
    _remove(root, removed, last)
    return not (root.is_symlink() or root.exists())


def _remove(path: Path, removed: list[Path], last: bool = True) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
            removed.append(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        if not last and exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return  # a file appeared meanwhile: the next pass removes it
        raise StateError(f"cannot remove {path}: {exc.strerror or exc}") from exc
