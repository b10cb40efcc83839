"""The epsilon ledger: what one report costs, what a lifetime can cost, and what this machine spent.

Per report, the fields of a report kind compose sequentially: the sum of their ``epsilon_1``.
Over a lifetime, each distinct value (memo key) that ever got a permanent randomized response
can reveal at most ``epsilon_perm``, so the worst case is ``sum(epsilon_perm * memo_space)``
and this machine's actual spend counts the memo keys it really used. The :class:`Ledger` keeps
only HMAC digests of those keys under the local secret: it must never hold a raw value, a
memo label or a PRR, so reading the file reveals how many values were used, not which.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ldp.errors import DecodeError, ParameterError
from ldp.longitudinal import FieldRandomizer, field_bytes

__all__ = [
    "FieldLike",
    "KindLike",
    "Ledger",
    "lifetime_worst_case",
    "memo_digest",
    "per_report_epsilon",
]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_FORMAT = 1


class FieldLike(Protocol):
    """A named field that resolves to a randomizer (``ldp.schema.FieldSpec`` is one)."""

    @property
    def name(self) -> str: ...
    def randomizer(self) -> FieldRandomizer: ...


class KindLike(Protocol):
    """A report kind: a sequence of fields (``ldp.schema.ReportKind`` is one)."""

    @property
    def fields(self) -> Sequence[FieldLike]: ...


def _fields(kind: KindLike | Iterable[FieldLike]) -> list[FieldLike]:
    items = kind.fields if hasattr(kind, "fields") else kind
    return list(items)


def per_report_epsilon(kind: KindLike | Iterable[FieldLike]) -> float:
    """Epsilon of one report of this kind: the sum of its fields' achieved ``epsilon_1``."""
    return sum(f.randomizer().epsilon_1 for f in _fields(kind))


def lifetime_worst_case(kind: KindLike | Iterable[FieldLike]) -> float:
    """Worst-case lifetime epsilon: per field, ``epsilon_perm`` times every memo key it has.

    A categorical field has one memo key per value (d); a set field one per real or dummy item
    (d + pad). Reached only by a user who, over time, reports every possible value.
    """
    return sum(f.randomizer().epsilon_perm * f.randomizer().memo_space for f in _fields(kind))


def memo_digest(secret: bytes, label: bytes) -> str:
    """Hex HMAC-SHA256 of a memo label under the local secret: what the ledger stores.

    The ``ledger/`` prefix separates these from the PRR streams, whose HMAC messages start with
    ``prr/`` or ``pick/``, so a digest never equals a block of any PRR's randomness.
    """
    if len(secret) < 16:
        raise ParameterError(f"secret length ({len(secret)} bytes) must be >= 16")
    return hmac.new(secret, b"ledger/" + label, hashlib.sha256).hexdigest()


class Ledger:
    """HMAC digests of the memo keys that got a PRR, per field, in a small JSON file.

    The file is ``{"v": 1, "fields": {"<field>": ["<64 hex>", ...]}}``, rewritten atomically
    (temporary file in the same directory, fsync, rename) with mode 0600. Concurrent writers on
    POSIX are serialized by an advisory lock on ``<path>.lock``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    @property
    def path(self) -> Path:
        """Where the ledger lives (in the user's state directory)."""
        return self._path

    def _load(self) -> dict[str, set[str]]:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise DecodeError(f"ledger {self._path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("v") != _FORMAT:
            raise DecodeError(f"ledger {self._path} must be an object with v = {_FORMAT}")
        fields = doc.get("fields")
        if not isinstance(fields, dict):
            raise DecodeError(f"ledger {self._path} must have a 'fields' object")
        out: dict[str, set[str]] = {}
        for name, digests in fields.items():
            if not isinstance(digests, list) or not all(
                isinstance(x, str) and _DIGEST.fullmatch(x) for x in digests
            ):
                raise DecodeError(f"ledger field {name!r} must be a list of 64-hex digests")
            out[name] = set(digests)
        return out

    def _write(self, data: dict[str, set[str]]) -> None:
        doc: dict[str, Any] = {
            "v": _FORMAT,
            "fields": {name: sorted(data[name]) for name in sorted(data)},
        }
        payload = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", dir=self._path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                if hasattr(os, "fchmod"):
                    os.fchmod(fh.fileno(), 0o600)
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # filelock: flock on POSIX, LockFileEx on Windows; the kernel releases a dead holder's.
        import filelock

        self._path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(self._path.with_name(self._path.name + ".lock")), mode=0o600):
            yield

    def record(self, field: str, digest: str) -> bool:
        """Note that ``field`` used the memo key with this digest; True if it is new."""
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise ParameterError(f"memo digest ({digest!r}) must be 64 lowercase hex digits")
        field_bytes(field)  # type check of the name
        with self._locked():
            data = self._load()
            known = data.setdefault(field, set())
            if digest in known:
                return False
            known.add(digest)
            self._write(data)
            return True

    def record_value(
        self, randomizer: FieldRandomizer, field: str, value: Any, secret: bytes
    ) -> int:
        """Record every memo key ``value`` uses in ``field``; returns how many were new."""
        labels = randomizer.memo_keys(value, field, secret)
        return sum(self.record(field, memo_digest(secret, label)) for label in labels)

    def count(self, field: str) -> int:
        """How many distinct memo keys ``field`` has used on this machine."""
        return len(self._load().get(field, ()))

    def counts(self) -> dict[str, int]:
        """Distinct memo keys per field."""
        return {name: len(d) for name, d in sorted(self._load().items())}

    def actual_lifetime_epsilon(self, *kinds: KindLike | Iterable[FieldLike]) -> float:
        """This machine's lifetime spend over the given kinds: ``epsilon_perm`` x keys used."""
        data = self._load()
        total = 0.0
        for kind in kinds:
            for f in _fields(kind):
                total += f.randomizer().epsilon_perm * len(data.get(f.name, ()))
        return total

    def purge(self) -> None:
        """Delete the ledger (``disable --purge``), together with its lock file."""
        for p in (self._path, self._path.with_name(self._path.name + ".lock")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
