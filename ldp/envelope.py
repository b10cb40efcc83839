"""HPKE envelope for reports (RFC 9180 base mode, one shot, via ``cryptography``).

The client seals each randomized report to the analyzer's public key, so the collector stores
only opaque bytes. Never hand-rolled: every primitive comes from ``cryptography``. The private
key is only ever read by the analyzer; nothing here sends anything anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from ldp.errors import EnvelopeError

__all__ = [
    "INFO",
    "PUBLIC_KEY_PREFIX",
    "fingerprint",
    "generate_keypair",
    "load_private_key",
    "open_sealed",
    "public_key_from_text",
    "public_key_to_text",
    "seal",
    "write_private_key",
]

INFO = b"20i-telemetry/v1"
PUBLIC_KEY_PREFIX = "20i-pk1:"
#: X25519 encapsulated key (32 bytes) + Poly1305 tag (16 bytes): nothing shorter can open.
MIN_SEALED_LEN = 48

#: The body of a public key text: exactly 43 base64url characters (32 bytes, no padding).
_KEY_BODY = re.compile(r"[A-Za-z0-9_-]{43}")

_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)


def generate_keypair() -> tuple[X25519PrivateKey, X25519PublicKey]:
    """A fresh analyzer key pair from the OS CSPRNG."""
    private = X25519PrivateKey.generate()
    return private, private.public_key()


def seal(plaintext: bytes, public_key: X25519PublicKey) -> bytes:
    """Encrypt ``plaintext`` to ``public_key``; each call uses a fresh ephemeral key."""
    return _SUITE.encrypt(plaintext, public_key, info=INFO)


def open_sealed(ciphertext: bytes, private_key: X25519PrivateKey) -> bytes:
    """Decrypt a sealed report, or raise :class:`EnvelopeError` for anything that is not one."""
    if not isinstance(ciphertext, bytes | bytearray | memoryview):
        raise EnvelopeError(f"sealed report must be bytes, not {type(ciphertext).__name__}")
    if len(ciphertext) < MIN_SEALED_LEN:
        raise EnvelopeError(
            f"sealed report too short ({len(ciphertext)} bytes, at least {MIN_SEALED_LEN})"
        )
    try:
        return _SUITE.decrypt(bytes(ciphertext), private_key, info=INFO)
    except InvalidTag:
        raise EnvelopeError("sealed report failed authentication (tampered or wrong key)") from None
    except ValueError as exc:  # malformed encapsulated key and similar
        raise EnvelopeError(f"sealed report is malformed: {exc}") from None


def _raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_to_text(public_key: X25519PublicKey) -> str:
    """The one-line form a distributor pastes into config: ``20i-pk1:<base64url>``."""
    encoded = base64.urlsafe_b64encode(_raw(public_key)).rstrip(b"=").decode("ascii")
    return PUBLIC_KEY_PREFIX + encoded


def public_key_from_text(text: str) -> X25519PublicKey:
    """Parse :func:`public_key_to_text` output; :class:`EnvelopeError` names what is wrong."""
    text = text.strip()
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise EnvelopeError(f"public key must start with {PUBLIC_KEY_PREFIX!r}")
    body = text[len(PUBLIC_KEY_PREFIX) :]
    # Checked before decoding: the decoder silently skips characters outside the alphabet.
    if not _KEY_BODY.fullmatch(body):
        raise EnvelopeError("public key must be 32 bytes: 43 base64url characters after the prefix")
    raw = base64.urlsafe_b64decode(body + "=")
    if len(raw) != 32:  # pragma: no cover - 43 characters always decode to 32 bytes
        raise EnvelopeError(f"public key must be 32 bytes, got {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def fingerprint(public_key: X25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw key, in groups of four, for display."""
    digest = hashlib.sha256(_raw(public_key)).hexdigest()[:16]
    return " ".join(digest[i : i + 4] for i in range(0, 16, 4))


def write_private_key(path: Path, private_key: X25519PrivateKey, *, force: bool = False) -> None:
    """Write the private key as PKCS#8 PEM, created with mode 0600 (never world-readable).

    ``force`` overwrites a regular file but never follows a symbolic link at ``path`` (that
    would write the key wherever the link points, and tighten that file's mode): the link is
    refused with :class:`OSError` (``ELOOP``), as an existing file is without ``force``.
    """
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nofollow = getattr(os, "O_NOFOLLOW", 0)  # POSIX; Windows has no symlink-following opens
    flags = os.O_WRONLY | os.O_CREAT | nofollow | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> X25519PrivateKey:
    """Read a private key written by :func:`write_private_key`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EnvelopeError(f"cannot read private key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise EnvelopeError(f"{path} is not a PEM private key") from None
    if not isinstance(key, X25519PrivateKey):
        raise EnvelopeError(f"{path} holds a {type(key).__name__}, not an X25519 key")
    return key
