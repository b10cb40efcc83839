"""ldp: the client library of 20i telemetry, local differential privacy on the user's machine.

Pure Python on the client path (stdlib + cryptography); numpy is imported only by the
simulation and estimation paths, so the names that need it (``FrequencyEstimate``,
``estimate_frequencies``) are loaded on first use. Nothing in this package sends data anywhere.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ldp.errors import (
    DecodeError,
    EnvelopeError,
    LdpError,
    ParameterError,
    SchemaError,
)
from ldp.mechanisms import GRR, OLH, OUE, SS, SUE, Mechanism, choose, from_name

if TYPE_CHECKING:
    from ldp.estimate import FrequencyEstimate, estimate_frequencies

__all__ = [
    "GRR",
    "OLH",
    "OUE",
    "SS",
    "SUE",
    "DecodeError",
    "EnvelopeError",
    "FrequencyEstimate",
    "LdpError",
    "Mechanism",
    "ParameterError",
    "SchemaError",
    "choose",
    "estimate_frequencies",
    "from_name",
]

#: Public names whose modules import numpy: resolved lazily so ``import ldp`` stays light.
_LAZY = {
    "FrequencyEstimate": "ldp.estimate",
    "estimate_frequencies": "ldp.estimate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ldp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
