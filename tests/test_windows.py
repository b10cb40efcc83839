"""server_agg.windows: one call per field over a window, and the choice of the window."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ldp.errors import ParameterError
from ldp.estimate import PooledChannel, epoch_pair_share, pooled_frequencies
from server_agg.windows import choose_window, field_window
from tests.test_pooled import V2, epoch_supports, field

SEED = 2026_1506


def weeks_of(name: str, n: int, weeks: int, seed: int) -> np.ndarray:
    """(weeks, d) supports of one simulated population through the real randomizer."""
    spec = field(V2, name)
    rng = np.random.default_rng(seed)
    if spec.kind == "categorical":
        values = np.repeat(np.arange(4), [n // 2, n // 4, n // 8, n - n // 2 - n // 4 - n // 8])
    else:
        values = np.zeros((n, spec.d), dtype=bool)
        values[: n // 2, 0] = True
    return epoch_supports(rng, spec, values, n, weeks, reps=1)[0]


class TestFieldWindow:
    """field_window(): estimate, auto, significance and ranking of one field."""

    def test_pools_like_pooled_frequencies(self) -> None:
        """The raw estimate and std are pooled_frequencies' for the field's epoch share."""
        spec = field(V2, "command")
        supports = weeks_of("command", 1000, 4, SEED)
        out = field_window(spec, supports, 1000)
        share = epoch_pair_share(spec.epoch_weeks, 4)
        ref = pooled_frequencies(supports, 1000, PooledChannel.of(spec.randomizer()), share)
        np.testing.assert_allclose(out.estimate.raw, ref.raw)
        np.testing.assert_allclose(out.estimate.std, ref.std)
        np.testing.assert_allclose(np.diag(out.cov), ref.std**2, rtol=1e-12)
        assert out.estimate.choice is not None and out.weeks == 4

    def test_outputs_agree_with_each_other(self) -> None:
        """The significance colours match the drawn intervals and the ranking leads with the
        largest value; to_dict is JSON-ready and names the estimate the intervals are for."""
        spec = field(V2, "command")
        out = field_window(spec, weeks_of("command", 3000, 12, SEED + 1), 3000)
        np.testing.assert_array_equal(out.significance.significant, out.significance.low > 0)
        assert out.ranking.order[0] == int(np.argmax(out.estimate.raw))
        doc = json.loads(json.dumps(out.to_dict()))
        assert doc["intervals_for"].startswith("raw")
        assert doc["ranking"]["top"][0]["value"] == "init"
        assert doc["estimate"]["consistency_choice"]["method"] == out.estimate.consistency

    def test_set_field_is_clipped(self) -> None:
        """modules (a set field) is clipped, never projected, and still ranked."""
        out = field_window(field(V2, "modules"), weeks_of("modules", 1000, 1, SEED + 2), 1000)
        assert out.estimate.consistency == "clip" and out.estimate.choice is None
        assert out.ranking.k == 3

    def test_shape_is_checked(self) -> None:
        """Supports must be (weeks, d) for the field."""
        with pytest.raises(ParameterError, match="weeks, 14"):
            field_window(field(V2, "command"), np.zeros((2, 3)), 100)


class TestChooseWindow:
    """choose_window(): the shortest window meeting the half-width target."""

    def test_shortest_window_that_meets_the_target(self) -> None:
        """At n = 10,000 one week meets 0.05 for command; at 300 no window does, and the
        reason says which field falls short."""
        spec = field(V2, "command")
        big = weeks_of("command", 10_000, 4, SEED + 3)
        ok = choose_window({w: [field_window(spec, big[:w], 10_000)] for w in (1, 4)})
        assert ok.met and ok.weeks == 1 and "shortest" in ok.reason
        small = weeks_of("command", 300, 12, SEED + 4)
        short = choose_window({w: [field_window(spec, small[:w], 300)] for w in (1, 12)})
        assert not short.met and short.weeks == 12 and "command stays at" in short.reason
        assert json.loads(json.dumps(short.to_dict()))["weeks"] == 12

    def test_empty_is_refused(self) -> None:
        """No candidate windows is an error."""
        with pytest.raises(ParameterError):
            choose_window({})


class _W:
    """A HalfWidth without a field behind it, to state the rule's arithmetic."""

    def __init__(self, name: str, half_width: float) -> None:
        self.name = name
        self.half_width = half_width


class TestChooseWindowTolerance:
    """Without a window meeting the target, stop where waiting no longer narrows anything."""

    def test_stops_within_tolerance_of_the_longest(self) -> None:
        """a narrows to 0.085 at 4 weeks; 0.086 at 3 is within 5% of it, 0.09 at 2 is not;
        b (a year-long memo) never narrows and does not hold the answer back."""
        candidates = {
            w: [_W("a", a), _W("b", 0.2)] for w, a in ((1, 0.1), (2, 0.09), (3, 0.086), (4, 0.085))
        }
        choice = choose_window(candidates)
        assert choice.weeks == 3 and not choice.met
        assert "b stays at 0.200 over 4 weeks" in choice.reason
        assert "no field's interval by more than 5%" in choice.reason
        assert choose_window(candidates, tolerance=0.0).weeks == 4
