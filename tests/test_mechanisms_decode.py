"""Decoders accept exactly the mechanisms' outputs: property tests of validate and encode_batch.

Everything a client can emit (``privatize`` through any random source, or a simulated batch row
written back as a wire value, after a JSON round trip) must validate and encode; anything out of
range or of the wrong JSON type must be refused with a typed ``ldp.errors`` error
(``OutOfRangeError`` or ``WrongTypeError``, both ``DecodeError``), by ``validate`` and by
``encode_batch`` wherever the bad value sits in the batch.
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldp.errors import DecodeError, OutOfRangeError, ParameterError, WrongTypeError
from ldp.mechanisms import GRR, OLH, OUE, SS, SUE
from ldp.sampling import HmacSource

Mech = GRR | SUE | OUE | OLH | SS

MECHS: list[Mech] = [
    GRR(1.0, 5),
    SUE(1.0, 8),
    OUE(2.0, 64),
    OLH(1.0, 10),
    OLH(6.0, 100),
    SS(0.5, 20),
    SS(4.0, 5),
]
IDS = [f"{m.name}-d{m.d}-eps{m.epsilon}" for m in MECHS]
PROPERTY = settings(max_examples=30, deadline=None)

#: JSON values of the wrong type for an integer-valued wire (GRR index, UE bitmask).
NOT_AN_INT = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
#: Scalars that are not JSON integers (bool is not an int on the wire).
NOT_INT_SCALAR = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=5))


def emitted(m: Mech, x: int, key: bytes) -> object:
    """One client output, drawn reproducibly through a keyed deterministic source."""
    wire = m.privatize(x, HmacSource(key, b"decode-test"))
    return json.loads(json.dumps(wire))  # what the analyzer sees after the wire


def row_to_wire(m: Mech, row: Any) -> object:
    """A simulated batch row written as the wire value the client would have sent."""
    if isinstance(m, GRR):
        return int(row)
    if isinstance(m, SUE | OUE):
        return int.from_bytes(np.asarray(row, dtype=np.uint8).tobytes(), "little")
    return [int(v) for v in row]


@st.composite
def client_wires(draw: st.DrawFn, m: Mech) -> list[object]:
    xs = draw(st.lists(st.integers(0, m.d - 1), min_size=1, max_size=8))
    key = draw(st.binary(min_size=16, max_size=32))
    return [m.privatize(x, HmacSource(key, b"batch/" + bytes([i]))) for i, x in enumerate(xs)]


def out_of_range(m: Mech) -> st.SearchStrategy[object]:
    """Wire values of the right JSON shape whose numbers fall outside the allowed range."""
    if isinstance(m, GRR):
        return st.integers().filter(lambda v: not 0 <= v < m.d)
    if isinstance(m, SUE | OUE):
        return st.integers(-(1 << 80), 1 << 80).filter(lambda v: not 0 <= v < 1 << m.d)
    if isinstance(m, OLH):
        seed_ok, bucket_ok = st.integers(0, (1 << 32) - 1), st.integers(0, m.g - 1)
        bad_seed = st.integers(-(1 << 40), 1 << 40).filter(lambda s: not 0 <= s < 1 << 32)
        bad_bucket = st.integers(-1000, 1 << 40).filter(lambda b: not 0 <= b < m.g)
        return st.one_of(st.tuples(bad_seed, bucket_ok), st.tuples(seed_ok, bad_bucket)).map(list)

    def legal(v: list[int]) -> bool:
        return all(0 <= a < b < m.d for a, b in pairwise(v)) and (not v or 0 <= v[0] < m.d)

    right_size = st.lists(st.integers(-3, m.d + 3), min_size=m.k, max_size=m.k)
    wrong_size = st.lists(st.integers(0, m.d - 1), max_size=m.d + 2).filter(lambda v: len(v) != m.k)
    return st.one_of(right_size.filter(lambda v: not legal(v)), wrong_size)


def wrong_type(m: Mech) -> st.SearchStrategy[object]:
    """Wire values of the wrong JSON type for this mechanism."""
    if isinstance(m, GRR | SUE | OUE):
        return NOT_AN_INT
    if isinstance(m, OLH):
        return st.one_of(
            NOT_INT_SCALAR,
            st.integers(),
            st.lists(st.integers(0, 3), max_size=5).filter(lambda v: len(v) != 2),
            st.tuples(NOT_INT_SCALAR, st.integers(0, m.g - 1)).map(list),
            st.tuples(st.integers(0, 99), NOT_INT_SCALAR).map(list),
        )

    @st.composite
    def one_bad_element(draw: st.DrawFn) -> list[object]:
        # A legal subset with one element swapped for a non-integer: only the type is wrong.
        good: list[object] = sorted(
            draw(st.sets(st.integers(0, m.d - 1), min_size=m.k, max_size=m.k))
        )
        good[draw(st.integers(0, m.k - 1))] = draw(NOT_INT_SCALAR)
        return good

    return st.one_of(NOT_INT_SCALAR, st.integers(), one_bad_element())


@pytest.mark.parametrize("m", MECHS, ids=IDS)
class TestAcceptsEverythingEmitted:
    """Every output the encoders produce is a legal wire value."""

    @PROPERTY
    @given(data=st.data())
    def test_client_outputs_validate_after_json(self, m: Mech, data: st.DataObject) -> None:
        """privatize's output, through JSON, passes validate and encodes to one batch row."""
        x = data.draw(st.integers(0, m.d - 1))
        wire = emitted(m, x, data.draw(st.binary(min_size=16, max_size=32)))
        m.validate(wire)
        assert len(m.encode_batch([wire])) == 1

    @PROPERTY
    @given(data=st.data())
    def test_batches_of_client_outputs_encode(self, m: Mech, data: st.DataObject) -> None:
        """A list of client outputs encodes to one row each, and its support counts n reports."""
        wires = data.draw(client_wires(m))
        batch = m.encode_batch(wires)
        assert len(batch) == len(wires)
        support = m.support(batch)
        assert support.shape == (m.d,)
        assert support.min() >= 0
        assert support.max() <= len(wires)

    @PROPERTY
    @given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 20))
    def test_simulated_rows_are_legal_wires_and_round_trip(
        self, m: Mech, seed: int, n: int
    ) -> None:
        """Each privatize_many row, written as a wire, validates and re-encodes to the same row."""
        rng = np.random.default_rng(seed)
        batch = m.privatize_many(rng.integers(0, m.d, n), rng)
        wires = [row_to_wire(m, row) for row in batch]
        for w in wires:
            m.validate(w)
        again = m.encode_batch(wires)
        np.testing.assert_array_equal(np.asarray(again), np.asarray(batch))

    def test_empty_batch_has_the_batch_shape(self, m: Mech) -> None:
        """An empty list of wires encodes to an empty batch of the right shape."""
        empty = m.encode_batch([])
        sim = m.privatize_many(np.zeros(0, dtype=np.int64), np.random.default_rng(0))
        assert np.asarray(empty).shape == np.asarray(sim).shape


@pytest.mark.parametrize("m", MECHS, ids=IDS)
class TestRejectsEverythingElse:
    """Malformed wire values are refused with a typed DecodeError, alone or inside a batch."""

    @PROPERTY
    @given(data=st.data())
    def test_out_of_range_is_out_of_range_error(self, m: Mech, data: st.DataObject) -> None:
        """Right JSON shape, wrong numbers: OutOfRangeError from validate and encode_batch."""
        bad = data.draw(out_of_range(m))
        with pytest.raises(OutOfRangeError):
            m.validate(bad)
        with pytest.raises(OutOfRangeError):
            m.encode_batch([bad])

    @PROPERTY
    @given(data=st.data())
    def test_wrong_type_is_a_typed_decode_error(self, m: Mech, data: st.DataObject) -> None:
        """Wrong JSON types raise WrongTypeError (a wrong list length may be OutOfRangeError)."""
        bad = data.draw(wrong_type(m))
        with pytest.raises(DecodeError) as info:
            m.validate(bad)
        assert isinstance(info.value, WrongTypeError | OutOfRangeError)
        if not isinstance(bad, list):
            assert isinstance(info.value, WrongTypeError)

    @PROPERTY
    @given(data=st.data())
    def test_one_bad_value_spoils_the_whole_batch(self, m: Mech, data: st.DataObject) -> None:
        """encode_batch refuses a batch of good outputs with one bad value anywhere in it."""
        wires = data.draw(client_wires(m))
        bad = data.draw(st.one_of(out_of_range(m), wrong_type(m)))
        wires.insert(data.draw(st.integers(0, len(wires))), bad)
        with pytest.raises(DecodeError):
            m.encode_batch(wires)

    def test_bool_is_not_an_integer(self, m: Mech) -> None:
        """JSON true/false never pass as 1/0, alone or inside a list."""
        for bad in (True, False, [True, 0], [0, False]):
            with pytest.raises(DecodeError):
                m.validate(bad)
        if isinstance(m, SS):
            legal: list[object] = list(range(m.k))
            legal[0] = False
            with pytest.raises(WrongTypeError):
                m.validate(legal)


class TestSpecificShapes:
    """A few hand-picked malformed values, to pin the error type where it is unambiguous."""

    def test_grr_bounds(self) -> None:
        """GRR accepts 0 and d-1, refuses -1 and d as out of range, 1.0 and '1' as wrong type."""
        m = GRR(1.0, 5)
        m.validate(0)
        m.validate(4)
        for bad in (-1, 5):
            with pytest.raises(OutOfRangeError, match=r"\[0, 5\)"):
                m.validate(bad)
        for bad in (1.0, "1", None):
            with pytest.raises(WrongTypeError):
                m.validate(bad)

    def test_unary_bounds(self) -> None:
        """UE accepts 0 and 2^d - 1, refuses 2^d and -1."""
        m = OUE(1.0, 8)
        m.validate(0)
        m.validate(255)
        for bad in (256, -1):
            with pytest.raises(OutOfRangeError):
                m.validate(bad)

    def test_olh_shape(self) -> None:
        """OLH needs exactly [seed, bucket] with seed < 2^32 and bucket < g."""
        m = OLH(1.0, 10)
        m.validate([(1 << 32) - 1, m.g - 1])
        with pytest.raises(OutOfRangeError, match="seed"):
            m.validate([1 << 32, 0])
        with pytest.raises(OutOfRangeError, match="bucket"):
            m.validate([0, m.g])
        for bad in ([0], [0, 0, 0], {"seed": 0, "bucket": 0}, "0,0", [0.0, 0]):
            with pytest.raises(WrongTypeError):
                m.validate(bad)

    def test_subset_order_and_duplicates(self) -> None:
        """SS refuses unsorted, duplicated, too short and too long index lists."""
        m = SS(1.0, 8)
        assert m.k == 2
        m.validate([0, 7])
        for bad in ([7, 0], [3, 3], [3], [1, 2, 3], [-1, 2], [2, 8]):
            with pytest.raises(OutOfRangeError):
                m.validate(bad)

    def test_privatize_refuses_bad_inputs(self) -> None:
        """privatize and privatize_many refuse an index outside [0, d) with a ParameterError."""
        for m in MECHS:
            for bad in (-1, m.d, True, 1.5):
                with pytest.raises(ParameterError):
                    m.privatize(bad)  # type: ignore[arg-type]
            with pytest.raises(ParameterError, match=rf"\[0, {m.d}\)"):
                m.privatize_many(np.array([0, m.d]), np.random.default_rng(0))
