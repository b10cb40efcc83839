"""Exact privacy loss of a whole transcript of reports, for two histories of one user's values.

A privacy number we print is a theorem; this module is how the tests check it. For one field,
a *history* is the field's true value in each of T consecutive weeks. A *scheme* turns a
history into groups of weeks that share one hidden draw: the v1 memo (one permanent response
per distinct value, :func:`memo_groups`), schema v2's epochs (one response per epoch, frozen
from the epoch's first week, :func:`epoch_groups`) or fresh noise (:func:`fresh_groups`).
Inside a group, reports are independent given the hidden draw; groups are independent.

:func:`exact_loss` returns ``max over transcripts |ln P[transcript | a] - ln P[transcript | b]|``
by enumerating every transcript of the real channels (:func:`field_channel` reads the exact
probabilities off the randomizer objects the client uses). Two facts keep that feasible without
changing the answer: weeks that share a group in *both* histories are exchangeable, so only the
multiset of their reports matters; and blocks that share no group in either history are
independent, so their maxima add. Transcripts of probability zero under one history only are
an infinite loss. Arithmetic is in float64 logs of the exact rationals (relative error ~1e-12).
Analysis only: imports numpy, never used on the client path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

from ldp.epochs import epoch_index
from ldp.errors import ParameterError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ldp.longitudinal import FieldRandomizer

__all__ = [
    "Channel",
    "Group",
    "epoch_groups",
    "exact_loss",
    "field_channel",
    "fresh_groups",
    "memo_groups",
]

#: Largest number of joint transcripts one independent component may enumerate.
MAX_COMBINATIONS = 20_000_000

#: One group: the weeks (0-based positions in the history) sharing a draw, and its input value.
Group = tuple[tuple[int, ...], Hashable]


@dataclass(frozen=True)
class Channel:
    """A field's randomizer as matrices: ``prior[v, s]`` = P[hidden s | value v] (the permanent
    response), ``emit[s, y]`` = P[report y | s] (the instantaneous one). ``values`` names the
    rows (value indices, or frozensets for set fields)."""

    values: tuple[Hashable, ...]
    prior: npt.NDArray[np.float64]
    emit: npt.NDArray[np.float64]

    def row(self, value: Hashable) -> int:
        """Row of ``value`` in ``prior``."""
        try:
            return self.values.index(value)
        except ValueError:
            raise ParameterError(f"value {value!r} is not an input of this channel") from None


def _outputs(randomizer: Any) -> list[Any]:
    """Every wire value the base oracle can emit (SS: k-subsets; GRR: indices; UE: masks)."""
    mech, d = randomizer.mechanism, randomizer.d
    if mech == "ss":
        return [list(c) for c in combinations(range(d), randomizer.k)]
    if mech == "grr":
        return list(range(d))
    if mech in ("sue", "oue"):
        if d > 14:
            raise ParameterError(f"unary encoding over d = {d} has too many outputs to enumerate")
        return list(range(1 << d))
    raise ParameterError(
        f"mechanism {mech!r} cannot be enumerated (OLH's 32-bit seeds); the schema refuses it "
        "where its seed would change with the value"
    )


@functools.cache
def field_channel(randomizer: FieldRandomizer) -> Channel:
    """The exact channel of a field randomizer: categorical (values 0..d-1) or a set field
    (every subset of the domain), from the randomizer's own probability functions (cached:
    randomizers are immutable)."""
    import numpy as np

    from ldp.sets import SetOracle

    if isinstance(randomizer, SetOracle):
        inner = field_channel(randomizer.oracle)
        items = range(randomizer.d + randomizer.pad)
        sets = [
            frozenset(c)
            for r in range(randomizer.d + 1)
            for c in combinations(range(randomizer.d), r)
        ]
        pick = np.array([[float(randomizer.pick_probability(i, s)) for i in items] for s in sets])
        return Channel(tuple(sets), pick @ inner.prior, inner.emit)
    oracle: Any = randomizer
    outs = _outputs(oracle)
    prior = np.array([[float(oracle.prr_probability(s, v)) for s in outs] for v in range(oracle.d)])
    emit = np.array([[float(oracle.irr_probability(y, s)) for y in outs] for s in outs])
    return Channel(tuple(range(oracle.d)), prior, emit)


# --------------------------------------------------------------------------- schemes


def memo_groups(history: Sequence[Hashable]) -> list[Group]:
    """v1: one permanent response per distinct value, shared by every week of that value."""
    weeks: dict[Hashable, list[int]] = {}
    for t, v in enumerate(history):
        weeks.setdefault(v, []).append(t)
    return [(tuple(ts), v) for v, ts in weeks.items()]


def fresh_groups(history: Sequence[Hashable]) -> list[Group]:
    """Fresh noise: every week draws its own response."""
    return [((t,), v) for t, v in enumerate(history)]


def epoch_groups(
    history: Sequence[Hashable], weeks: int, offset: int, first_week: int = 0
) -> list[Group]:
    """Schema v2: one response per epoch of ``weeks`` weeks (the client's own
    :func:`ldp.epochs.epoch_index`), drawn on the epoch's first week in the history."""
    groups: dict[int, list[int]] = {}
    for t in range(len(history)):
        groups.setdefault(epoch_index(first_week + t, offset, weeks), []).append(t)
    return [(tuple(ts), history[ts[0]]) for _, ts in sorted(groups.items())]


# --------------------------------------------------------------------------- the calculator


def _log(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    import numpy as np

    with np.errstate(divide="ignore"):
        return np.log(a)


def _multisets(log_emit: npt.NDArray[np.float64], size: int) -> npt.NDArray[np.float64]:
    """Per multiset of ``size`` reports with positive probability: sum of log emit per state."""
    import numpy as np

    finite = np.isfinite(log_emit)
    if size > 1 and np.array_equal(finite, np.eye(len(finite), dtype=bool)):
        # Frozen responses (v2): every report of a block repeats the hidden draw, so the only
        # possible multisets are s repeated ``size`` times, one per state.
        out = np.full(log_emit.shape, -np.inf)
        np.fill_diagonal(out, size * np.diag(log_emit))
        return out
    found: list[npt.NDArray[np.float64]] = []

    def walk(start: int, left: int, vec: npt.NDArray[np.float64]) -> None:
        if left == 0:
            found.append(vec)
            return
        alive = np.isfinite(vec)
        candidates = np.nonzero(finite[alive].any(axis=0))[0]
        for y in candidates[candidates >= start]:
            walk(int(y), left - 1, vec + log_emit[:, y])

    walk(0, size, np.zeros(log_emit.shape[0]))
    return np.array(found)


def _logsumexp(x: npt.NDArray[np.float64], axis: int) -> npt.NDArray[np.float64]:
    import numpy as np

    top = np.max(x, axis=axis, keepdims=True)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - safe), axis=axis, keepdims=True)) + safe
    result: npt.NDArray[np.float64] = np.squeeze(out, axis=axis)
    return result


def _component_loss(
    blocks: list[tuple[int, int]],
    sizes: dict[tuple[int, int], int],
    groups: tuple[dict[int, Hashable], dict[int, Hashable]],
    channel: Channel,
) -> tuple[float, float]:
    import numpy as np

    log_emit = _log(channel.emit)
    log_prior = _log(channel.prior)
    options = [_multisets(log_emit, sizes[b]) for b in blocks]
    total = math.prod(len(o) for o in options)
    if total * channel.prior.shape[1] > MAX_COMBINATIONS:
        raise ParameterError(
            f"{total} joint transcripts in one component: too many to enumerate; shorten T"
        )
    k = len(blocks)
    logs = []
    for side in (0, 1):
        acc = None
        for gid, value in groups[side].items():
            vec = log_prior[channel.row(value)].copy()
            shape = [1] * k + [vec.shape[0]]
            term = vec.reshape(shape)
            for i, b in enumerate(blocks):
                if b[side] == gid:
                    shaped = [1] * k + [vec.shape[0]]
                    shaped[i] = len(options[i])
                    term = term + options[i].reshape(shaped)
            if all(b[side] != gid for b in blocks):
                continue
            lse = _logsumexp(term, axis=k)
            acc = lse if acc is None else acc + lse
        assert acc is not None
        logs.append(np.broadcast_to(acc, [len(o) for o in options]))
    la, lb = logs
    with np.errstate(invalid="ignore"):
        diff = la - lb
    possible = np.isfinite(la) | np.isfinite(lb)
    diff = np.where(possible, diff, 0.0)
    return float(np.max(diff)), float(np.max(-diff))


def exact_loss(channel: Channel, groups_a: Iterable[Group], groups_b: Iterable[Group]) -> float:
    """Max over all transcripts of |ln P[t | a] - ln P[t | b]| (``math.inf`` if unbounded)."""
    ga: dict[int, int] = {}
    gb: dict[int, int] = {}
    values: tuple[dict[int, Hashable], dict[int, Hashable]] = ({}, {})
    for side, (groups, owner) in enumerate(((groups_a, ga), (groups_b, gb))):
        for gid, (weeks, value) in enumerate(groups):
            channel.row(value)
            values[side][gid] = value
            for t in weeks:
                if t in owner:
                    raise ParameterError(f"week {t} is in two groups")
                owner[t] = gid
    if set(ga) != set(gb):
        raise ParameterError("the two histories must cover the same weeks")
    sizes: dict[tuple[int, int], int] = {}
    for t in ga:
        key = (ga[t], gb[t])
        sizes[key] = sizes.get(key, 0) + 1
    # Union-find over blocks: linked when they share a group on either side.
    parent = {b: b for b in sizes}

    def find(b: tuple[int, int]) -> tuple[int, int]:
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        return b

    for side in (0, 1):
        first: dict[int, tuple[int, int]] = {}
        for b in sizes:
            if b[side] in first:
                parent[find(b)] = find(first[b[side]])
            else:
                first[b[side]] = b
    components: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for b in sizes:
        components.setdefault(find(b), []).append(b)
    up = down = 0.0
    for blocks in components.values():
        used = (
            {b[0]: values[0][b[0]] for b in blocks},
            {b[1]: values[1][b[1]] for b in blocks},
        )
        a_over_b, b_over_a = _component_loss(blocks, sizes, used, channel)
        up += a_over_b
        down += b_over_a
    return max(up, down)


def loss_for(
    randomizer: FieldRandomizer,
    scheme: Callable[[Sequence[Hashable]], list[Group]],
    history_a: Sequence[Hashable],
    history_b: Sequence[Hashable],
) -> float:
    """:func:`exact_loss` of one field's real channel under ``scheme`` for two histories."""
    if len(history_a) != len(history_b):
        raise ParameterError("the two histories must have the same length")
    channel = field_channel(randomizer)  # type: ignore[arg-type]  # randomizers are frozen
    return exact_loss(channel, scheme(history_a), scheme(history_b))
