"""Where reports go and whom they are sealed to: the collector endpoint and the analyzer key.

Resolved from, highest first: ``TWENTYI_TELEMETRY_ENDPOINT`` / ``TWENTYI_TELEMETRY_PUBLIC_KEY``,
the user's hand-edited ``telemetry-config.json``, then the distribution defaults shipped as
package data. A value that is present but invalid is never skipped over to a lower source:
it leaves that setting unconfigured (see ``20i telemetry status`` for what then happens to
reports) and the problem is reported.
Never contacts the endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twentyi_telemetry.errors import ConfigError
from twentyi_telemetry.state import Paths, read_small

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

__all__ = [
    "ENV_ENDPOINT",
    "ENV_PUBLIC_KEY",
    "Destination",
    "load_defaults",
    "resolve",
]

ENV_ENDPOINT = "TWENTYI_TELEMETRY_ENDPOINT"
ENV_PUBLIC_KEY = "TWENTYI_TELEMETRY_PUBLIC_KEY"
_CONFIG_KEYS = frozenset({"endpoint", "public_key"})


def load_defaults() -> dict[str, Any]:
    """The distribution defaults (``twentyi_telemetry/data/defaults.json``): endpoint, key,
    policy version."""
    text = (
        resources.files("twentyi_telemetry")
        .joinpath("data/defaults.json")
        .read_text(encoding="utf-8")
    )
    defaults = json.loads(text)
    if not isinstance(defaults, dict):  # pragma: no cover - package data is ours
        raise ConfigError("twentyi_telemetry/data/defaults.json must hold a JSON object")
    return defaults


@dataclass(frozen=True)
class Destination:
    """The resolved endpoint and analyzer key, where each came from, and what was wrong."""

    endpoint: str | None
    endpoint_source: str  # "env", "config", "default" or "none"
    public_key: str | None  # text form "20i-pk1:..."
    key_source: str
    problems: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        """Both set and valid: reports can be sealed and sent."""
        return self.endpoint is not None and self.public_key is not None

    def key(self) -> X25519PublicKey:
        """The analyzer's public key object (imports cryptography, so never on the host path)."""
        if self.public_key is None:
            raise ConfigError("no analyzer public key is configured")
        from ldp.envelope import public_key_from_text

        return public_key_from_text(self.public_key)

    def fingerprint(self) -> str | None:
        """The key fingerprint users compare with the one the maintainers publish."""
        if self.public_key is None:
            return None
        from ldp.envelope import fingerprint

        return fingerprint(self.key())

    def to_dict(self) -> dict[str, Any]:
        """The ``endpoint`` object of ``status --json`` and ``info --json`` (docs/CLI.md)."""
        return {
            "url": self.endpoint,
            "url_source": self.endpoint_source,
            "public_key": self.public_key,
            "public_key_source": self.key_source,
            "public_key_fingerprint": self.fingerprint(),
            "configured": self.configured,
            "problems": list(self.problems),
        }


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_endpoint(value: object, where: str) -> str:
    """An ``https://`` URL (``http://`` only to a loopback address, for a local collector),
    with a host, a port in 1..65535 if any, and no ``user:password@``."""
    if not isinstance(value, str):
        raise ValueError(f"endpoint from {where} must be a string, not {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"endpoint from {where} ({value!r}) must be an https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError(f"endpoint from {where} ({value!r}) must not hold a user or password")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise ValueError(f"endpoint from {where} ({value!r}): the port must be in 1..65535")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"endpoint from {where} ({value!r}) must be https:// (http:// is only for a"
            " collector on this machine: localhost, 127.0.0.1 or ::1)"
        )
    return value


def _check_key(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"public key from {where} must be a string, not {type(value).__name__}")
    from ldp.envelope import public_key_from_text
    from ldp.errors import EnvelopeError

    try:
        public_key_from_text(value.strip())
    except EnvelopeError as exc:
        raise ValueError(f"public key from {where} is not usable: {exc}") from None
    return value.strip()


def _read_user_config(paths: Paths) -> tuple[dict[str, Any], str | None]:
    try:
        data = read_small(paths.config_file)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"cannot read {paths.config_file}: {exc.strerror or exc}"
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, f"{paths.config_file} is not valid JSON ({exc})"
    if not isinstance(raw, dict):
        return {}, f"{paths.config_file} must hold a JSON object"
    unknown = sorted(set(raw) - _CONFIG_KEYS)
    if unknown:
        return {}, (
            f"{paths.config_file} has unknown keys {unknown}; allowed: {sorted(_CONFIG_KEYS)}"
        )
    return raw, None


def resolve(paths: Paths, env: Mapping[str, str]) -> Destination:
    """Resolve endpoint and key by precedence: environment, user config, defaults."""
    problems: list[str] = []
    config, config_problem = _read_user_config(paths)
    if config_problem is not None:
        problems.append(config_problem + "; nothing is sent until it is fixed")
    defaults = load_defaults()

    Check = Callable[[object, str], str]

    def pick(env_name: str, key: str, check: Check) -> tuple[str | None, str]:
        value: object
        if env.get(env_name, "").strip():
            source, value, where = "env", env[env_name].strip(), env_name
        elif config_problem is not None:
            return None, "none"
        elif config.get(key) is not None:
            source, value, where = "config", config[key], str(paths.config_file)
        elif defaults.get(key) is not None:
            source, value, where = "default", defaults[key], "the distribution defaults"
        else:
            return None, "none"
        try:
            return check(value, where), source
        except ValueError as exc:
            problems.append(str(exc) + "; treated as not configured until it is fixed")
            return None, "none"

    endpoint, endpoint_source = pick(ENV_ENDPOINT, "endpoint", _check_endpoint)
    key, key_source = pick(ENV_PUBLIC_KEY, "public_key", _check_key)
    return Destination(endpoint, endpoint_source, key, key_source, tuple(problems))
