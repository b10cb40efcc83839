"""The one exception tree of ``ldp``.

Everything ``ldp`` raises on purpose derives from :class:`LdpError`, so callers can catch the
whole family in one place (the CLI turns it into one readable line)::

    LdpError
    ├── ParameterError (ValueError)   bad epsilon, domain size, probability, pad length
    ├── DecodeError (ValueError)      a mechanism output, report or schema that is malformed
    │   ├── OutOfRangeError           a value outside its allowed range
    │   ├── UnknownSchemaError        schema id not known to the decoder
    │   ├── UnknownFieldError         a field the schema does not have
    │   ├── MissingFieldError         a field the schema requires is absent
    │   ├── WrongTypeError            a value of the wrong JSON type
    │   ├── TooLargeError             a plaintext over the 4 KiB limit
    │   └── PaddingError              a sealed plaintext not padded to the one wire length
    ├── SchemaError (ValueError)      invalid schema, or epsilons over the client caps
    └── EnvelopeError                 HPKE open failed: tampered, wrong key, truncated, junk key
"""

from __future__ import annotations


class LdpError(Exception):
    """Base class of every error ``ldp`` raises on purpose."""


class ParameterError(LdpError, ValueError):
    """A mechanism or sampler parameter is outside its allowed range."""


class DecodeError(LdpError, ValueError):
    """Input that claims to be an ldp output, report or schema is malformed."""


class OutOfRangeError(DecodeError):
    """A value lies outside the range its decoder allows."""


class UnknownSchemaError(DecodeError):
    """A report names a schema id the decoder does not know."""


class UnknownFieldError(DecodeError):
    """A report carries a field its schema does not define."""


class MissingFieldError(DecodeError):
    """A report lacks a field its schema requires."""


class WrongTypeError(DecodeError):
    """A value has the wrong JSON type."""


class TooLargeError(DecodeError):
    """A plaintext report exceeds the wire format's size limit."""


class PaddingError(DecodeError):
    """A sealed plaintext is not a report followed by spaces up to exactly the padded length."""


class SchemaError(LdpError, ValueError):
    """A schema is invalid, or asks for more epsilon than the client allows."""


class EnvelopeError(LdpError):
    """A sealed report could not be opened, or a key could not be parsed."""
