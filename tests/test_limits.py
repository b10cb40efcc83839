"""server_agg.limits in isolation: parameter checks, the file-limit arithmetic, the log throttle."""

from __future__ import annotations

import logging
import resource

import pytest

from server_agg.limits import ConnectionLimits, SameLineThrottle, fd_headroom, raise_fd_limit


class TestConnectionLimits:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("idle_timeout", 0),
            ("header_timeout", -1.0),
            ("body_timeout", float("inf")),
            ("max_header_bytes", 100),
            ("max_connections", 0),
        ],
    )
    def test_rejects_bad_values(self, field: str, value: float) -> None:
        """Every limit names itself and its allowed range when out of it."""
        with pytest.raises(ValueError, match=field):
            ConnectionLimits(**{field: value})  # type: ignore[arg-type]

    def test_defaults_are_valid(self) -> None:
        """The defaults pass their own checks and leave honest clients ample time."""
        limits = ConnectionLimits()
        assert limits.header_timeout >= 5 and limits.body_timeout >= 10
        assert limits.max_header_bytes >= 8 * 1024


class TestFileLimit:
    def test_raise_reaches_the_hard_limit(self) -> None:
        """The soft open-files limit ends at the hard one (or stays, when that is not allowed)."""
        soft = raise_fd_limit()
        now_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert soft == now_soft
        assert hard == resource.RLIM_INFINITY or now_soft == hard

    def test_headroom_keeps_a_reserve(self) -> None:
        """Connections never take the last descriptors (store, WAL, logs need some)."""
        assert fd_headroom(1024) == 960
        assert fd_headroom(10) == 1


class TestSameLineThrottle:
    def _record(self, message: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, message, (), None)

    def test_one_line_per_period_with_count(self) -> None:
        """A burst of the same line passes once; the next pass says how many were dropped."""
        throttle = SameLineThrottle("Invalid HTTP request received.", every=3600)
        passed = [
            throttle.filter(self._record("Invalid HTTP request received.")) for _ in range(50)
        ]
        assert passed.count(True) == 1
        throttle._last -= 7200  # the period is over
        record = self._record("Invalid HTTP request received.")
        assert throttle.filter(record)
        assert "49 more not logged" in record.getMessage()

    def test_other_lines_untouched(self) -> None:
        """Lines other than the throttled one always pass."""
        throttle = SameLineThrottle("x", every=3600)
        assert all(throttle.filter(self._record("something else")) for _ in range(5))
