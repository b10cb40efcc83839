"""ldp: the client library of 20i telemetry, local differential privacy on the user's machine.

Pure Python on the client path (stdlib + cryptography); numpy is imported only by the
simulation and estimation paths, so the names that need it (``FrequencyEstimate``,
``estimate_frequencies``) are loaded on first use. Nothing in this package sends data anywhere.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ldp.amplification import CentralEpsilon, central_epsilon
from ldp.budget import YearBudget, per_report_epsilon, year_budget
from ldp.envelope import fingerprint, open_sealed, seal
from ldp.errors import (
    DecodeError,
    EnvelopeError,
    LdpError,
    MissingFieldError,
    OutOfRangeError,
    PaddingError,
    ParameterError,
    SchemaError,
    TooLargeError,
    UnknownFieldError,
    UnknownSchemaError,
    WrongTypeError,
)
from ldp.longitudinal import FieldRandomizer, LongitudinalOracle, longitudinal
from ldp.mechanisms import GRR, OLH, OUE, SS, SUE, Mechanism, choose, from_name
from ldp.report import Report, build_report, decode_report, iso_period, parse_period
from ldp.schema import EPSILON_CAPS, FieldSpec, ReportKind, Schema, load_schema, shipped_schema
from ldp.sets import SetOracle
from ldp.values import arch_value, os_value, platform_value, version_bucket

if TYPE_CHECKING:
    from ldp.estimate import FrequencyEstimate, estimate_frequencies

__all__ = [
    "EPSILON_CAPS",
    "GRR",
    "OLH",
    "OUE",
    "SS",
    "SUE",
    "CentralEpsilon",
    "DecodeError",
    "EnvelopeError",
    "FieldRandomizer",
    "FieldSpec",
    "FrequencyEstimate",
    "LdpError",
    "LongitudinalOracle",
    "Mechanism",
    "MissingFieldError",
    "OutOfRangeError",
    "PaddingError",
    "ParameterError",
    "Report",
    "ReportKind",
    "Schema",
    "SchemaError",
    "SetOracle",
    "TooLargeError",
    "UnknownFieldError",
    "UnknownSchemaError",
    "WrongTypeError",
    "YearBudget",
    "arch_value",
    "build_report",
    "central_epsilon",
    "choose",
    "decode_report",
    "estimate_frequencies",
    "fingerprint",
    "from_name",
    "iso_period",
    "load_schema",
    "longitudinal",
    "open_sealed",
    "os_value",
    "parse_period",
    "per_report_epsilon",
    "platform_value",
    "seal",
    "shipped_schema",
    "version_bucket",
    "year_budget",
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
