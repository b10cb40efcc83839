"""A simulated population of 20i users that runs the real client code, for demos and tests.

Every simulated user has its own 32-byte secret and true values drawn from a configurable model
(:data:`DEFAULT_MODEL`); each report goes through the same path as a real client's:
``build_report`` (memoized permanent response, fresh instantaneous response) -> canonical
encoding -> HPKE ``seal`` -> ``POST /v1/reports`` in batches of at most 64 with httpx. The seed
drives the population (a numpy Generator); the LDP noise comes from the OS CSPRNG as on a real
client, unless a test passes a seeded ``noise`` Generator to make a run reproducible. Only
simulated data goes anywhere; this module never touches a real user's state.

The *truth* it reports is the empirical frequency in the simulated population: per value of a
categorical field, the share of reports with it; per item of a set field, the share of users
having it (the default model never gives a user more modules than the field's pad length, so
padding-and-sampling is unbiased for exactly that share; see :meth:`Population.targets`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ldp.envelope import seal
from ldp.epochs import epoch_index, epoch_offset, week_index
from ldp.report import build_report, iso_period, period_start
from ldp.sampling import SYSTEM, RandomSource
from ldp.schema import Schema, shipped_schema
from server_agg.marginals import DERIVED_FROM, groups_of

if TYPE_CHECKING:
    import httpx
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

__all__ = [
    "DEFAULT_MODEL",
    "MAX_BATCH",
    "GeneratorSource",
    "Population",
    "PostStats",
    "SimulationError",
    "load_model",
    "make_population",
    "post_reports",
    "simulate",
]

#: DESIGN section 4: the collector takes at most 64 reports per request.
MAX_BATCH: Final = 64

#: The default population. ``categorical``: field -> value -> weight (normalised; values the
#: schema lacks count as ``other``). ``sets``: field -> ``sizes`` (number of items -> weight) and
#: ``items`` (item -> weight for drawing without replacement). ``resample``: fields drawn afresh
#: every period (the command of the week), the rest are fixed per user. ``errors_share``: the
#: share of users who also consented to error reports. ``arrivals`` (a population shift, empty
#: by default): ``share`` x clients more users join, each at a week drawn uniformly from the
#: second period on, with ``categorical`` tables replacing the base ones for them.
DEFAULT_MODEL: Final[Mapping[str, Any]] = {
    "categorical": {
        "cli_version": {
            "0.9": 1,
            "1.0": 2,
            "1.1": 3,
            "1.2": 5,
            "1.3": 7,
            "1.4": 10,
            "1.5": 20,
            "1.6": 35,
            "2.0": 15,
            "other": 2,
        },
        "os": {"linux": 55, "macos": 30, "windows": 12, "freebsd": 2, "other": 1},
        "arch": {
            "x86_64": 70,
            "arm64": 25,
            "x86": 1,
            "arm": 2,
            "riscv64": 0.5,
            "ppc64le": 0.5,
            "s390x": 0.5,
            "other": 0.5,
        },
        "platform": {
            "linux-x86_64": 40,
            "linux-arm64": 8,
            "macos-arm64": 24,
            "macos-x86_64": 6,
            "windows-x86_64": 11,
            "windows-arm64": 1,
            "linux-arm": 2,
            "linux-x86": 1,
            "windows-x86": 0.5,
            "freebsd-x86_64": 2,
            "linux-riscv64": 0.5,
            "linux-ppc64le": 0.5,
            "other": 3.5,
        },
        "command": {
            "init": 5,
            "build": 25,
            "deploy": 12,
            "up": 15,
            "down": 6,
            "status": 12,
            "logs": 10,
            "config": 4,
            "login": 3,
            "logout": 1,
            "telemetry": 1,
            "version": 2,
            "help": 3,
            "other": 1,
        },
        "error_category": {
            "none": 70,
            "network": 8,
            "auth": 4,
            "config": 5,
            "permission": 2,
            "not_found": 3,
            "timeout": 3,
            "conflict": 1,
            "invalid_input": 2,
            "internal": 1,
            "other": 1,
        },
    },
    "sets": {
        "modules": {
            "sizes": {"0": 20, "1": 45, "2": 35},
            "items": {
                "docker": 40,
                "git": 30,
                "kubernetes": 12,
                "aws": 8,
                "ssh": 5,
                "terraform": 3,
                "gcp": 1.5,
                "azure": 0.5,
            },
        }
    },
    "resample": ["command", "error_category"],
    "errors_share": 0.5,
    "arrivals": {},
}


class SimulationError(Exception):
    """A bad model, endpoint or answer from the collector; the message says which."""


class GeneratorSource:
    """A :class:`~ldp.sampling.RandomSource` backed by a seeded numpy Generator.

    For reproducible simulations only: a real client must use the OS CSPRNG (``ldp.sampling``).
    Words are drawn in blocks; ``randbelow`` is exact (rejection sampling on masked words, the
    same method as ``ldp.sampling``).
    """

    _BLOCK = 4096

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._words: list[int] = []

    def word(self) -> int:
        """A uniform integer in ``[0, 2**32)``."""
        if not self._words:
            self._words = self._rng.integers(0, 1 << 32, size=self._BLOCK).tolist()
        return self._words.pop()

    def randbelow(self, n: int) -> int:
        """A uniform integer in ``[0, n)``."""
        if n < 1:
            raise ValueError(f"randbelow bound ({n}) must be >= 1")
        if n == 1:
            return 0
        bits = (n - 1).bit_length()
        mask = (1 << bits) - 1
        words = (bits + 31) // 32
        while True:
            value = 0
            for _ in range(words):
                value = (value << 32) | self.word()
            value &= mask
            if value < n:
                return value


def _weights(table: Mapping[str, float], what: str) -> tuple[list[str], list[float]]:
    if not isinstance(table, Mapping) or not table:
        raise SimulationError(f"{what} must be a non-empty object of weights")
    names, weights = [], []
    for name, weight in table.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
            raise SimulationError(f"{what}: weight of {name!r} ({weight!r}) must be a number >= 0")
        names.append(str(name))
        weights.append(float(weight))
    total = sum(weights)
    if total <= 0:
        raise SimulationError(f"{what}: weights must not all be 0")
    return names, [w / total for w in weights]


def load_model(text: str) -> dict[str, Any]:
    """A model from JSON text: :data:`DEFAULT_MODEL` with the given top-level keys replaced."""
    try:
        given = json.loads(text)
    except ValueError as exc:
        raise SimulationError(f"model is not valid JSON: {exc}") from None
    if not isinstance(given, dict):
        raise SimulationError("model must be a JSON object")
    unknown = sorted(set(given) - set(DEFAULT_MODEL))
    if unknown:
        raise SimulationError(
            f"model has unknown key {unknown[0]!r} (allowed: {', '.join(sorted(DEFAULT_MODEL))})"
        )
    return {**DEFAULT_MODEL, **given}


@dataclass(frozen=True)
class User:
    """One simulated user: a secret and, per period, the true values of each report kind."""

    secret: bytes
    #: kind -> one dict per period; ``None`` for a period before the user arrived (the
    #: model's ``arrivals``).
    values: Mapping[str, Sequence[Mapping[str, Any] | None]]


@dataclass(frozen=True)
class Population:
    """Simulated users of one schema over consecutive periods (oldest first)."""

    schema: Schema
    periods: tuple[str, ...]
    users: tuple[User, ...]

    def report_count(self) -> int:
        """Reports the population sends in all (one per user, kind and period present)."""
        return sum(
            row is not None for u in self.users for rows in u.values.values() for row in rows
        )

    def counts(self) -> dict[tuple[str, str], int]:
        """Reports per ``(kind, period)``: the weights of a window's truth (pooled estimates
        are unbiased for the report-weighted mean of the weeks' frequencies)."""
        out: dict[tuple[str, str], int] = {}
        for kind in self.schema.kinds:
            for p, period in enumerate(self.periods):
                out[(kind.name, period)] = sum(
                    kind.name in u.values and u.values[kind.name][p] is not None for u in self.users
                )
        return out

    def truth(self) -> dict[tuple[str, str, str], list[float]]:
        """Empirical frequencies per ``(kind, period, field)``, one number per domain value."""
        return self._frequencies(targets=False)

    def targets(self) -> dict[tuple[str, str, str], list[float]]:
        """What the estimators are unbiased for: :meth:`truth`, except that a set with more
        items than the pad counts each item as ``pad / size`` of a user (ldp.sets)."""
        return self._frequencies(targets=True)

    def _frequencies(self, *, targets: bool) -> dict[tuple[str, str, str], list[float]]:
        out: dict[tuple[str, str, str], list[float]] = {}
        for kind in self.schema.kinds:
            for p, period in enumerate(self.periods):
                rows = [
                    row
                    for u in self.users
                    if kind.name in u.values and (row := u.values[kind.name][p]) is not None
                ]
                for spec in kind.fields:
                    counts = [0.0] * spec.d
                    for row in rows:
                        if spec.kind == "categorical":
                            counts[spec.index(row[spec.name])] += 1
                            continue
                        items = spec.indices(row[spec.name])
                        pad = spec.pad or 1
                        weight = min(1.0, pad / len(items)) if targets and items else 1.0
                        for i in items:
                            counts[i] += weight
                    n = max(len(rows), 1)
                    out[(kind.name, period, spec.name)] = [c / n for c in counts]
                    if spec.name == DERIVED_FROM:  # the analyzer's os and arch marginals
                        for part, name in enumerate(("os", "arch")):
                            out[(kind.name, period, name)] = [
                                sum(counts[i] for i in group) / n
                                for group in groups_of(spec.domain, part).values()
                            ]
        return out

    def reports(self, rand: RandomSource = SYSTEM) -> Iterator[bytes]:
        """Every report's plaintext as the client seals it (canonical, padded to the one
        length), built by the real client code (period-major)."""
        for p, period in enumerate(self.periods):
            for user in self.users:
                for kind, per_period in user.values.items():
                    row = per_period[p]
                    if row is None:
                        continue
                    report = build_report(self.schema, kind, period, row, user.secret, rand)
                    yield report.padded()

    def sealed(self, public_key: X25519PublicKey, rand: RandomSource = SYSTEM) -> Iterator[bytes]:
        """Every report sealed to ``public_key``, as a client would send it."""
        for plaintext in self.reports(rand):
            yield seal(plaintext, public_key)


def recent_periods(count: int, last: str | None = None) -> tuple[str, ...]:
    """``count`` consecutive ISO weeks ending with ``last`` (default: this week), oldest first."""
    if not 1 <= count <= 520:
        raise SimulationError(f"periods ({count}) must be in [1, 520]")
    end = period_start(last) if last is not None else datetime.now(UTC)
    return tuple(iso_period(end - timedelta(weeks=count - 1 - i)) for i in range(count))


def make_population(
    clients: int,
    *,
    seed: int | None = None,
    model: Mapping[str, Any] = DEFAULT_MODEL,
    schema: Schema | None = None,
    periods: Sequence[str] | None = None,
) -> Population:
    """Draw ``clients`` users (secrets and true values) from ``model`` with ``seed``."""
    import numpy as np

    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise SimulationError(f"clients ({clients!r}) must be an integer >= 1")
    schema = schema or shipped_schema()
    chosen = tuple(periods) if periods else recent_periods(1)
    rng = np.random.default_rng(seed)
    categorical = model.get("categorical", {})
    sets = model.get("sets", {})
    resample = set(model.get("resample", ()))
    share = model.get("errors_share", 0.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise SimulationError(f"errors_share ({share!r}) must be in [0, 1]")

    arrivals = model.get("arrivals") or {}
    arriving = _arrival_count(arrivals, clients, len(chosen))
    base = _draws(rng, schema, categorical, sets)
    joined = (
        _draws(rng, schema, {**categorical, **arrivals.get("categorical", {})}, sets)
        if arriving
        else base
    )
    weeks = [week_index(period) for period in chosen]
    users: list[User] = []
    for draws, count in ((base, clients), (joined, arriving)):
        if not count:
            continue
        kinds = schema.kinds
        # Arrivals start at a week drawn uniformly among the second to the last period.
        starts = [0] * count if draws is base else rng.integers(1, len(chosen), size=count).tolist()
        # Drawn column-wise (one vectorised call per field) so a big population is quick to make.
        fixed = {spec.name: draws[spec.name](count) for k in kinds for spec in k.fields}
        fresh = {
            spec.name: [draws[spec.name](count) for _ in chosen]
            for k in kinds
            for spec in k.fields
            if spec.name in resample
        }
        errors_on = rng.random(count) < share
        secrets_ = [rng.bytes(32) for _ in range(count)]
        for u in range(count):
            start = starts[u]
            values: dict[str, list[dict[str, Any] | None]] = {}
            for kind in kinds:
                if kind.name == "errors" and not errors_on[u]:
                    continue
                rows: list[dict[str, Any] | None] = [
                    None
                    if p < start
                    else {
                        spec.name: fresh[spec.name][p][u]
                        if spec.name in fresh
                        else fixed[spec.name][u]
                        for spec in kind.fields
                    }
                    for p in range(len(chosen))
                ]
                for spec in kind.fields:
                    _freeze(rows, spec.name, spec.epoch_weeks, secrets_[u], weeks)
                values[kind.name] = rows
            users.append(User(secrets_[u], values))
    return Population(schema, chosen, tuple(users))


def _arrival_count(arrivals: Mapping[str, Any], clients: int, periods: int) -> int:
    """How many users the model's ``arrivals`` add (none with a single period)."""
    if not arrivals:
        return 0
    share = arrivals.get("share", 0.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 10:
        raise SimulationError(f"arrivals.share ({share!r}) must be in [0, 10]")
    tables = arrivals.get("categorical", {})
    if not isinstance(tables, Mapping):
        raise SimulationError("arrivals.categorical must map fields to value weights")
    return round(share * clients) if periods > 1 else 0


def _draws(
    rng: np.random.Generator,
    schema: Schema,
    categorical: Mapping[str, Any],
    sets: Mapping[str, Any],
) -> dict[str, Callable[[int], list[Any]]]:
    """One vectorised draw per field of ``schema``: its model table, or uniform without one."""
    draws: dict[str, Callable[[int], list[Any]]] = {}
    for kind in schema.kinds:
        for spec in kind.fields:
            if spec.kind == "categorical":
                table = categorical.get(spec.name) or {v: 1 for v in spec.domain}
                names, probs = _weights(table, f"categorical.{spec.name}")
                draws[spec.name] = _categorical_draw(rng, names, probs)
            else:
                spec_model = sets.get(spec.name) or {
                    "sizes": {str(k): 1 for k in range((spec.pad or 1) + 1)},
                    "items": {v: 1 for v in spec.domain},
                }
                draws[spec.name] = _set_draw(rng, spec_model, spec.name, len(spec.domain))
    return draws


def _freeze(
    rows: Sequence[dict[str, Any] | None],
    name: str,
    epoch_weeks: int | None,
    secret: bytes,
    weeks: list[int],
) -> None:
    """What a real client reports in an epoch field is its value of the epoch's first week
    it reports in (``ldp.epochs``): give every later week of the epoch that value, so the
    population's truth is what the reports are unbiased for."""
    if epoch_weeks is None:
        return
    offset = epoch_offset(secret, name, epoch_weeks)
    first: dict[int, Any] = {}
    for row, week in zip(rows, weeks, strict=True):
        if row is not None:
            row[name] = first.setdefault(epoch_index(week, offset, epoch_weeks), row[name])


def _categorical_draw(
    rng: np.random.Generator, names: list[str], probs: list[float]
) -> Callable[[int], list[Any]]:
    def draw(n: int) -> list[Any]:
        return [names[i] for i in rng.choice(len(names), size=n, p=probs)]

    return draw


def _set_draw(
    rng: np.random.Generator, spec_model: Mapping[str, Any], name: str, limit: int
) -> Callable[[int], list[Any]]:
    import numpy as np

    size_names, size_probs = _weights(spec_model.get("sizes", {}), f"sets.{name}.sizes")
    try:
        sizes = [int(s) for s in size_names]
    except ValueError:
        raise SimulationError(f"sets.{name}.sizes: keys must be integers") from None
    items, item_probs = _weights(spec_model.get("items", {}), f"sets.{name}.items")
    if any(not 0 <= s <= min(len(items), limit) for s in sizes):
        raise SimulationError(f"sets.{name}.sizes must be in [0, {min(len(items), limit)}]")
    p = np.asarray(item_probs)

    def draw(n: int) -> list[Any]:
        out: list[Any] = []
        for k in rng.choice(sizes, size=n, p=size_probs):
            picked = rng.choice(len(items), size=int(k), replace=False, p=p) if k else ()
            out.append(frozenset(items[int(i)] for i in picked))
        return out

    return draw


# --------------------------------------------------------------------------- posting


@dataclass
class PostStats:
    """What the collector answered: reports sent, accepted and duplicates; requests made."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def _batches(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _post_one(client: httpx.Client, url: str, batch: list[bytes], attempts: int) -> dict[str, int]:
    import base64

    body = {"reports": [base64.b64encode(b).decode("ascii") for b in batch]}
    retries = 0
    for _ in range(attempts):
        response = client.post(url, json=body)
        if response.status_code == 202:
            doc = response.json()
            return {
                "accepted": int(doc.get("accepted", 0)),
                "duplicates": int(doc.get("duplicates", 0)),
                "retries": retries,
            }
        if response.status_code in (429, 503):
            retries += 1
            wait = response.headers.get("retry-after", "1")
            try:
                delay = min(float(wait), 5.0)
            except ValueError:
                delay = 1.0
            time.sleep(max(delay, 0.05))
            continue
        raise SimulationError(
            f"collector answered {response.status_code} to a batch of {len(batch)}: "
            f"{response.text[:200]}"
        )
    raise SimulationError(f"collector still overloaded after {attempts} attempts")


def post_reports(
    sealed: Iterable[bytes],
    endpoint: str,
    *,
    batch_size: int = MAX_BATCH,
    concurrency: int = 4,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 30.0,
    attempts: int = 20,
) -> PostStats:
    """POST sealed reports to ``endpoint`` + ``/v1/reports`` in batches, a few in parallel.

    Reports are produced lazily in this thread while up to ``concurrency`` requests are in
    flight, so building, sealing and the collector's commits overlap. Overload answers (429,
    503) are retried after their ``Retry-After``; any other refusal is a :class:`SimulationError`.
    """
    import httpx

    if not 1 <= batch_size <= MAX_BATCH:
        raise SimulationError(f"batch size ({batch_size}) must be in [1, {MAX_BATCH}]")
    url = endpoint.rstrip("/") + "/v1/reports"
    stats = PostStats()
    started = time.perf_counter()
    try:
        with (
            httpx.Client(transport=transport, timeout=timeout) as client,
            ThreadPoolExecutor(max_workers=concurrency) as pool,
        ):
            pending: list[Future[dict[str, int]]] = []

            def settle(future: Future[dict[str, int]]) -> None:
                answer = future.result()
                stats.accepted += answer["accepted"]
                stats.duplicates += answer["duplicates"]
                stats.retries += answer["retries"]

            for batch in _batches(sealed, batch_size):
                stats.sent += len(batch)
                stats.requests += 1
                pending.append(pool.submit(_post_one, client, url, batch, attempts))
                while len(pending) > 2 * concurrency:
                    settle(pending.pop(0))
            for future in pending:
                settle(future)
    except httpx.HTTPError as exc:
        raise SimulationError(f"cannot post to {url}: {exc}") from None
    stats.seconds = time.perf_counter() - started
    return stats


@dataclass(frozen=True)
class SimulationResult:
    """A posted population and what the collector said."""

    population: Population
    stats: PostStats


def simulate(
    clients: int,
    endpoint: str,
    public_key: X25519PublicKey,
    *,
    seed: int | None = None,
    model: Mapping[str, Any] = DEFAULT_MODEL,
    periods: Sequence[str] | None = None,
    noise: np.random.Generator | None = None,
    transport: httpx.BaseTransport | None = None,
) -> SimulationResult:
    """Make a population and post every report it sends; ``noise`` only for reproducible tests."""
    population = make_population(clients, seed=seed, model=model, periods=periods)
    rand: RandomSource = SYSTEM if noise is None else GeneratorSource(noise)
    stats = post_reports(population.sealed(public_key, rand), endpoint, transport=transport)
    return SimulationResult(population, stats)


def write_truth(population: Population, path: Path) -> None:
    """Save the population's truth as JSON: ``{"kind/period/field": [frequency per value]}``."""
    doc = {"/".join(key): values for key, values in population.truth().items()}
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
