"""Tests for ldp.values: platform facts mapped onto fixed vocabularies, never raising."""

from __future__ import annotations

import platform

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldp.values import _ARCH, _OS, arch_value, os_value, version_bucket

DOMAIN = ("0.9", "1.0", "1.4", "2.0", "other")
KNOWN_NAMES = set(_OS.values()) | set(_ARCH.values()) | {"other"}


class TestOsValue:
    @pytest.mark.parametrize(
        ("system", "expected"),
        [
            ("Linux", "linux"),
            ("Darwin", "macos"),
            ("Windows", "windows"),
            ("FreeBSD", "freebsd"),
            ("OpenBSD", "openbsd"),
            ("SunOS", "solaris"),
            ("CYGWIN_NT-10.0-19045", "windows"),
            ("MSYS_NT-10.0", "windows"),
            (" linux\n", "linux"),
        ],
    )
    def test_known_systems(self, system: str, expected: str) -> None:
        """Each platform.system() spelling maps to its family name."""
        assert os_value(system) == expected

    @pytest.mark.parametrize("system", ["", "Plan9", "Linux-alice-laptop", "linuxx", "Haiku"])
    def test_unknown_is_other(self, system: str) -> None:
        """Anything outside the table is "other", never the raw string."""
        assert os_value(system) == "other"

    def test_default_reads_this_machine(self) -> None:
        """Without an argument the value comes from platform.system()."""
        assert os_value() == os_value(platform.system())

    def test_probe_failure_is_other(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A platform probe that raises yields "other" instead of an exception."""

        def broken() -> str:
            raise OSError("uname failed")

        monkeypatch.setattr(platform, "system", broken)
        assert os_value() == "other"

    @settings(max_examples=300)
    @given(st.one_of(st.text(), st.integers(), st.none(), st.binary()))
    def test_never_raises_and_never_echoes(self, system: object) -> None:
        """Arbitrary input gives a name from the fixed table, never the input itself."""
        assert os_value(system) in KNOWN_NAMES


class TestArchValue:
    @pytest.mark.parametrize(
        ("machine", "expected"),
        [
            ("x86_64", "x86_64"),
            ("AMD64", "x86_64"),
            ("amd64", "x86_64"),
            ("arm64", "arm64"),
            ("ARM64", "arm64"),
            ("aarch64", "arm64"),
            ("i386", "x86"),
            ("i686", "x86"),
            ("armv7l", "arm"),
            ("armv6l", "arm"),
            ("riscv64", "riscv64"),
            ("ppc64le", "ppc64le"),
            ("s390x", "s390x"),
        ],
    )
    def test_known_machines(self, machine: str, expected: str) -> None:
        """Each platform.machine() spelling maps to its normalized name."""
        assert arch_value(machine) == expected

    @pytest.mark.parametrize("machine", ["", "pdp11", "x86_64-alice", "vax"])
    def test_unknown_is_other(self, machine: str) -> None:
        """Anything outside the table is "other"."""
        assert arch_value(machine) == "other"

    def test_default_reads_this_machine(self) -> None:
        """Without an argument the value comes from platform.machine()."""
        assert arch_value() == arch_value(platform.machine())

    def test_probe_failure_is_other(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A platform probe that raises yields "other" instead of an exception."""

        def broken() -> str:
            raise RuntimeError("no machine")

        monkeypatch.setattr(platform, "machine", broken)
        assert arch_value() == "other"

    @settings(max_examples=300)
    @given(st.one_of(st.text(), st.integers(), st.none(), st.binary()))
    def test_never_raises_and_never_echoes(self, machine: object) -> None:
        """Arbitrary input gives a name from the fixed table."""
        assert arch_value(machine) in KNOWN_NAMES


class TestVersionBucket:
    @pytest.mark.parametrize(
        ("version", "expected"),
        [
            ("1.4.2rc1", "1.4"),
            ("1.4", "1.4"),
            ("1.4rc1", "1.4"),
            ("v1.4.0", "1.4"),
            ("01.04.9", "1.4"),
            ("2.0.0.dev3+g1234", "2.0"),
            ("0.9.1", "0.9"),
        ],
    )
    def test_listed_buckets(self, version: str, expected: str) -> None:
        """A version whose major.minor is in the domain maps to that bucket."""
        assert version_bucket(version, DOMAIN) == expected

    @pytest.mark.parametrize(
        "version", ["1.5.0", "1.40.1", "14.0", "1", "", "one.four", "1.x", "alice", "10.4"]
    )
    def test_unlisted_is_other(self, version: str) -> None:
        """A version that is not listed, or has no major.minor, is "other"."""
        assert version_bucket(version, DOMAIN) == "other"

    @settings(max_examples=300)
    @given(st.one_of(st.text(), st.integers(), st.none(), st.floats()))
    def test_result_is_in_domain(self, version: object) -> None:
        """Whatever the input, the bucket is a member of the domain."""
        assert version_bucket(version, DOMAIN) in DOMAIN
