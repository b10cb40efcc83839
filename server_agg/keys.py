"""The analyzer's HPKE key pair on disk: generate it, load its halves.

A key directory holds ``private.pem`` (PKCS#8, mode 0600, read only by the analyzer) and
``public.txt`` (the ``20i-pk1:...`` line clients pin). All cryptography and file formats come
from :mod:`ldp.envelope`. This module never prints, sends or logs the private key, and the
collector only ever loads the public half.
"""

from __future__ import annotations

import os
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
    """Write a fresh key pair into ``out_dir`` (created, mode 0700, if missing).

    Refuses to replace an existing ``private.pem`` or ``public.txt`` unless ``force``: losing
    the private key makes every report sealed to it unreadable for good.
    """
    out = Path(out_dir)
    private_path, public_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        write_private_key(private_path, private, force=force)
        _write_text(public_path, text + "\n")
    except FileExistsError:
        raise KeyFileError(f"refusing to overwrite {private_path} (use --force)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write key files in {out}: {exc.strerror}") from None
    return KeyPairFiles(private_path, public_path, text, fingerprint(public))


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically so a reader never sees half a key."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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
