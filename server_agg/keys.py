"""The analyzer's HPKE key pair on disk: generate it, load its halves.

A key directory holds ``private.pem`` (PKCS#8, mode 0600, read only by the analyzer) and
``public.txt`` (the ``20i-pk1:...`` line clients pin). All cryptography and file formats come
from :mod:`ldp.envelope`. This module never prints, sends or logs the private key, and the
collector only ever loads the public half.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ldp.envelope import (
    fingerprint,
    generate_keypair,
    load_private_key,
    public_key_from_text,
    public_key_to_text,
    write_private_key,
)
from ldp.errors import EnvelopeError

__all__ = [
    "PRIVATE_NAME",
    "PUBLIC_NAME",
    "KeyFileError",
    "KeyPairFiles",
    "generate",
    "load_private",
    "load_public",
    "private_key_exposure",
]

PRIVATE_NAME = "private.pem"
PUBLIC_NAME = "public.txt"


class KeyFileError(Exception):
    """A key file or directory is missing, unreadable, malformed or would be overwritten."""


@dataclass(frozen=True)
class KeyPairFiles:
    """What :func:`generate` wrote: the two paths, the public key text and its fingerprint."""

    private_path: Path
    public_path: Path
    public_text: str
    fingerprint: str


def generate(out_dir: str | Path, *, force: bool = False) -> KeyPairFiles:
    """Write a fresh key pair into ``out_dir``, which ends up mode 0700 whether or not it existed.

    Refuses to replace an existing ``private.pem`` or ``public.txt`` unless ``force``: losing
    the private key makes every report sealed to it unreadable for good. Each file is written
    under a fresh random name and renamed into place, so ``force`` replaces a symlink planted at
    either name and never writes through it.
    """
    out = Path(out_dir)
    private_path, public_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir leaves an existing directory's mode alone (0777 stayed 0777).
        os.chmod(out, 0o700)
    except OSError as exc:
        raise KeyFileError(f"cannot create key directory {out}: {exc.strerror}") from None
    if not force:
        existing = [p for p in (private_path, public_path) if p.exists() or p.is_symlink()]
        if existing:
            names = ", ".join(str(p) for p in existing)
            raise KeyFileError(f"refusing to overwrite {names} (use --force to replace them)")
    private, public = generate_keypair()
    text = public_key_to_text(public)
    try:
        _place(private_path, lambda tmp: write_private_key(tmp, private), force=force)
        _place(public_path, lambda tmp: _write_new(tmp, (text + "\n").encode("ascii")), force=force)
    except FileExistsError:
        raise KeyFileError(f"refusing to overwrite {private_path} (use --force)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write key files in {out}: {exc.strerror}") from None
    return KeyPairFiles(private_path, public_path, text, fingerprint(public))


def _place(path: Path, write: Callable[[Path], None], *, force: bool) -> None:
    """Write a new file under a random name next to ``path``, then rename it onto ``path``.

    The new name is created with ``O_EXCL``, which never follows a symlink; the rename replaces
    the directory entry ``path`` itself (a symlink there is replaced, its target untouched). A
    reader never sees half a key. Without ``force`` an existing ``path`` is refused.
    """
    if not force and (path.exists() or path.is_symlink()):
        raise FileExistsError(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never an existing file or symlink) with ``data``, durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def private_key_exposure(path: str | Path) -> str | None:
    """A warning if the private key at ``path`` (file or key directory) is readable by group
    or others, else ``None``. Only a warning: the key may sit on a file system without modes."""
    p = _resolve(path, PRIVATE_NAME)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except OSError:
        return None  # loading the key reports it
    if mode & 0o077:
        return (
            f"private key {p} is readable by {'group and others' if mode & 0o007 else 'its group'}"
            f" (mode {mode:04o}); run: chmod 600 {p}"
        )
    return None


def _resolve(path: str | Path, name: str) -> Path:
    """A key file given directly, or ``name`` inside a key directory."""
    p = Path(path)
    if p.is_dir():
        if not (p / name).is_file():
            raise KeyFileError(f"key directory {p} has no {name}")
        return p / name
    if not p.exists():
        raise KeyFileError(f"no key file or key directory at {p}")
    return p


def load_public(path: str | Path) -> X25519PublicKey:
    """The public key from a ``public.txt`` file or a key directory."""
    p = _resolve(path, PUBLIC_NAME)
    try:
        return public_key_from_text(p.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read public key {p}: {exc}") from None
    except EnvelopeError as exc:
        raise KeyFileError(f"{p} is not a 20i public key: {exc}") from None


def load_private(path: str | Path) -> X25519PrivateKey:
    """The private key from a ``private.pem`` file or a key directory (the analyzer only)."""
    p = _resolve(path, PRIVATE_NAME)
    try:
        return load_private_key(p)
    except EnvelopeError as exc:
        raise KeyFileError(str(exc)) from None
