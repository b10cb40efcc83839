"""Why the analyzer stops (:class:`AggregateError`) and why it skips a report
(:data:`REJECT_REASONS`, :func:`reject_reason`).

Kept apart so that every other module of the pipeline can raise and count without importing
the rest; a bad report is only ever counted here, never raised.
"""

from __future__ import annotations

from typing import Final

from ldp.errors import (
    DecodeError,
    EnvelopeError,
    MissingFieldError,
    OutOfRangeError,
    PaddingError,
    TooLargeError,
    UnknownFieldError,
    UnknownSchemaError,
    WrongTypeError,
)

#: Why a report was skipped, in display order. ``decrypt``: the HPKE envelope did not open
#: (random bytes, truncated, tampered, or sealed to another key); ``unknown_schema``: a schema id
#: this analyzer does not know; ``out_of_range``: a value, kind, period or version outside what
#: the schema allows; ``implausible_period``: a real ISO week, but before the report's schema
#: was released or after next week (:mod:`server_agg.periods`); ``wrong_type``: a value of the
#: wrong JSON type; ``unknown_field`` / ``missing_field``: fields that do not match the report
#: kind; ``too_large``: plaintext over 4 KiB; ``padding``: not padded to the one length with
#: spaces (``ldp.report.unpad``), or unpadded although its schema was never sent unpadded
#: (every version but 1); ``malformed``: anything else the strict decoder
#: refuses (bad JSON, not canonical); ``internal``: the decoder failed in an unexpected way (a
#: bug: counted, never fatal).
REJECT_REASONS: Final = (
    "decrypt",
    "unknown_schema",
    "out_of_range",
    "implausible_period",
    "wrong_type",
    "unknown_field",
    "missing_field",
    "too_large",
    "padding",
    "malformed",
    "internal",
)


class AggregateError(Exception):
    """The analysis cannot run (bad options, unreadable input); the message says which and why."""


#: Error class -> reject reason, most specific first (the decoder's errors subclass DecodeError).
_REASON_OF: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (EnvelopeError, "decrypt"),
    (UnknownSchemaError, "unknown_schema"),
    (OutOfRangeError, "out_of_range"),
    (WrongTypeError, "wrong_type"),
    (UnknownFieldError, "unknown_field"),
    (MissingFieldError, "missing_field"),
    (TooLargeError, "too_large"),
    (PaddingError, "padding"),
    (DecodeError, "malformed"),
)


def reject_reason(exc: BaseException) -> str:
    """The :data:`REJECT_REASONS` entry for an exception raised while opening or decoding."""
    for cls, reason in _REASON_OF:
        if isinstance(exc, cls):
            return reason
    return "internal"
