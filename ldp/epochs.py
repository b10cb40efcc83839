"""Epochs: a field's randomized answer is drawn once per epoch of R weeks and then frozen.

This is the longitudinal scheme of schema v2 (docs/PRIVACY-OVER-TIME.md). Each user's epochs
for a field are staggered by an offset derived from the local secret, so the population's
answers refresh R-th by R-th every week. At the first report of an epoch the field's value of
that week goes through the field's randomizer once (its permanent response at ``epsilon_perm``);
every report of the epoch then carries that response through the instantaneous step, which is
the identity when ``epsilon_1 == epsilon_perm``. Later changes of the value inside the epoch
never reach a report, so what all reports reveal is one randomized answer per epoch: any 52
weeks touch at most :func:`epochs_touched` epochs, and the yearly bound is that many times the
field's epsilon, whatever the values do and whenever they change.

:class:`EpochMemo` keeps, in the user's state directory, each field's current epoch and its
frozen (already randomized) response, plus which epochs reported in the last two years (this
machine's actual spend). It never holds a true value.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, Final

from ldp.errors import DecodeError, ParameterError

__all__ = [
    "HISTORY_WEEKS",
    "WINDOW_WEEKS",
    "EpochMemo",
    "epoch_index",
    "epoch_offset",
    "epochs_touched",
    "week_index",
    "week_period",
]

#: The accounting window of the yearly bound: any 52 consecutive ISO weeks.
WINDOW_WEEKS: Final = 52
#: How long the memo remembers an epoch that reported (two windows: enough for any window
#: that ends this week or next).
HISTORY_WEEKS: Final = 2 * WINDOW_WEEKS
_FORMAT: Final = 1
#: The memo holds one response per field and a few epoch numbers: far below this.
_MAX_BYTES: Final = 1 << 20
# Monday of ISO week 1970-W02: week 0 of the absolute week count (1970-01-05).
_EPOCH_MONDAY: Final = date(1970, 1, 5).toordinal()


def week_index(period: str) -> int:
    """``"2026-W48"`` -> weeks since 1970-01-05: consecutive ISO weeks get consecutive ints."""
    from ldp.report import parse_period

    year, week = parse_period(period)
    return (date.fromisocalendar(year, week, 1).toordinal() - _EPOCH_MONDAY) // 7


def week_period(index: int) -> str:
    """Inverse of :func:`week_index`."""
    monday = date.fromordinal(_EPOCH_MONDAY + 7 * index)
    year, week, _ = monday.isocalendar()
    return f"{year:04d}-W{week:02d}"


def _check_weeks(weeks: object) -> int:
    if isinstance(weeks, bool) or not isinstance(weeks, int) or not 1 <= weeks <= WINDOW_WEEKS:
        raise ParameterError(f"epoch length ({weeks!r}) must be an integer in [1, {WINDOW_WEEKS}]")
    return weeks


def epoch_offset(secret: bytes, field: str, weeks: int) -> int:
    """This user's stagger for ``field``: HMAC of the field name under the secret, mod R.

    It depends on the secret and the field name only, never on a value, so when a user's
    answer changes tells nothing about what it is.
    """
    _check_weeks(weeks)
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise ParameterError("secret must be at least 16 bytes")
    digest = hmac.new(secret, b"epoch/" + field.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % weeks


def epoch_index(week: int, offset: int, weeks: int) -> int:
    """The epoch that absolute week ``week`` falls in, for a user with this offset."""
    _check_weeks(weeks)
    return (week + offset) // weeks


def epochs_touched(weeks: int, window: int = WINDOW_WEEKS) -> int:
    """Most epochs of R = ``weeks`` that ``window`` consecutive weeks can intersect.

    A window that starts in the last week of an epoch spends 1 week there, then whole epochs:
    ``ceil((window - 1) / R) + 1``. For R = 1 (fresh noise every week) this is the window.
    """
    _check_weeks(weeks)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ParameterError(f"window ({window!r}) must be an integer >= 1")
    return math.ceil((window - 1) / weeks) + 1


def _reported_in(reported: Mapping[str, int], week: int, window: int) -> int:
    """Epochs whose last report falls in the ``window`` weeks ending at ``week``."""
    return sum(1 for last in reported.values() if week - window < last <= week)


class EpochMemo:
    """Per field: the current epoch and its frozen response; the epochs that reported.

    The file is ``{"v": 1, "fields": {"<field>": {"epoch": E, "response": <wire>, "reported":
    {"<epoch>": <last week index>, ...}}}}``, rewritten atomically (temporary file, fsync,
    rename) with mode 0600. It is written only while a report is being built, which the
    client already serializes; a lost race can only repeat a deterministic response (the
    response is drawn from the secret, the field, the epoch and the value), never add one.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    @property
    def path(self) -> Path:
        """Where the memo lives (in the user's state directory)."""
        return self._path

    def _read(self) -> bytes | None:
        """The file's bytes (None if absent), opened without blocking and only if it is a
        regular file that is not a symbolic link: a FIFO, socket, folder or link loop put at
        the path must neither hang the reader nor be trusted (DecodeError)."""
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self._path, flags)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise DecodeError(f"epoch memo {self._path} cannot be opened: {exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise DecodeError(f"epoch memo {self._path} is not a regular file")
            if info.st_size > _MAX_BYTES:
                raise DecodeError(f"epoch memo {self._path} is over {_MAX_BYTES} bytes")
            chunks = []
            while chunk := os.read(fd, _MAX_BYTES + 1):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def load(self) -> dict[str, dict[str, Any]]:
        """The memo's fields; an absent file is an empty memo, a damaged one a DecodeError."""
        data = self._read()
        if data is None:
            return {}
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise DecodeError(f"epoch memo {self._path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("v") != _FORMAT:
            raise DecodeError(f"epoch memo {self._path} must be an object with v = {_FORMAT}")
        fields = doc.get("fields")
        if not isinstance(fields, dict):
            raise DecodeError(f"epoch memo {self._path} must have a 'fields' object")
        for name, entry in fields.items():
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("epoch"), int)
                and isinstance(entry.get("reported"), dict)
                and all(
                    k.lstrip("-").isdigit() and isinstance(v, int)
                    for k, v in entry["reported"].items()
                )
            ):
                raise DecodeError(f"epoch memo field {name!r} is malformed")
        return fields

    def frozen(self, field: str, epoch: int) -> Any | None:
        """The response frozen for ``field`` in ``epoch``, or None if the epoch has not begun.

        An epoch that the memo says has reported but whose response is missing raises
        ``DecodeError``: drawing it again could give a second, different answer in one epoch.
        """
        entry = self.load().get(field)
        if entry is None:
            return None
        if entry["epoch"] == epoch:
            if "response" not in entry:
                raise DecodeError(f"epoch memo {self._path}: {field!r} lost its response")
            return entry["response"]
        if str(epoch) in entry["reported"]:
            raise DecodeError(f"epoch memo {self._path}: {field!r} lost epoch {epoch}'s response")
        return None

    def commit(self, responses: Mapping[str, tuple[int, Any]], week: int) -> None:
        """Record that this week's report used ``responses`` (field -> (epoch, response))."""
        fields = self.load()
        for name, (epoch, response) in responses.items():
            entry = fields.get(name)
            reported = {} if entry is None else dict(entry["reported"])
            if entry is None or entry["epoch"] != epoch:
                entry = {"epoch": epoch, "response": response}
            reported = {k: v for k, v in reported.items() if v > week - HISTORY_WEEKS}
            reported[str(epoch)] = max(week, reported.get(str(epoch), week))
            entry["reported"] = reported
            fields[name] = entry
        self._write(fields)

    def epochs_reported(self, field: str, week: int, window: int = WINDOW_WEEKS) -> int:
        """How many of ``field``'s epochs sent a report in the ``window`` weeks ending at week."""
        entry = self.load().get(field)
        if entry is None:
            return 0
        return _reported_in(entry["reported"], week, window)

    def actual_spend(
        self, epsilons: Iterable[tuple[str, float]], week: int, window: int = WINDOW_WEEKS
    ) -> dict[str, float]:
        """Per field, its epsilon times the epochs that reported in the window ending at week."""
        fields = self.load()
        out = {}
        for name, eps in epsilons:
            reported = fields.get(name, {}).get("reported", {})
            used = _reported_in(reported, week, window)
            out[name] = eps * used
        return out

    def _write(self, fields: dict[str, dict[str, Any]]) -> None:
        payload = json.dumps(
            {"v": _FORMAT, "fields": fields}, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".epochs-", dir=self._path.parent)
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

    def purge(self) -> None:
        """Delete the memo (``disable --purge``)."""
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
