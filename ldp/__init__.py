"""ldp: the client library of 20i telemetry, local differential privacy on the user's machine.

Pure Python on the client path (stdlib + cryptography); numpy is imported only by the
simulation and estimation paths. Nothing in this package sends data anywhere.
"""

from __future__ import annotations

from ldp.errors import (
    DecodeError,
    EnvelopeError,
    LdpError,
    ParameterError,
    SchemaError,
)

__all__ = [
    "DecodeError",
    "EnvelopeError",
    "LdpError",
    "ParameterError",
    "SchemaError",
]
