"""The public surface of each package is deliberate: a sorted ``__all__`` that all resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


class TestLdpPublicApi:
    """``ldp/__init__.py`` lists exactly what users import."""

    def test_all_is_sorted_and_unique(self) -> None:
        """``__all__`` is sorted (case-sensitive, as ruff sorts it) and has no repeats."""
        ldp = importlib.import_module("ldp")
        assert list(ldp.__all__) == sorted(set(ldp.__all__), key=lambda s: (not s.isupper(), s))

    @pytest.mark.parametrize("name", importlib.import_module("ldp").__all__)
    def test_every_name_resolves(self, name: str) -> None:
        """Every exported name, lazy ones included, resolves to an object."""
        ldp = importlib.import_module("ldp")
        assert getattr(ldp, name) is not None

    def test_unknown_name_raises_attribute_error(self) -> None:
        """A missing attribute is an AttributeError, not a silent None."""
        ldp = importlib.import_module("ldp")
        with pytest.raises(AttributeError):
            _ = ldp.no_such_name

    def test_client_path_never_imports_numpy(self) -> None:
        """Importing ldp and privatizing one value leaves numpy unimported (client stays light)."""
        code = (
            "import sys, ldp\n"
            "for m in (ldp.GRR(1.0, 8), ldp.OUE(1.0, 8), ldp.OLH(1.0, 8), ldp.SS(1.0, 8)):\n"
            "    m.privatize(3)\n"
            "print('numpy' in sys.modules)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "False"


class TestHostPublicApi:
    """``twentyi_telemetry`` is the one module hosts import, with a deliberate surface."""

    def test_all_is_sorted_and_exact(self) -> None:
        """``__all__`` is sorted and names exactly the host integration."""
        package = importlib.import_module("twentyi_telemetry")
        assert list(package.__all__) == ["default_error_category", "instrument", "record"]
        assert all(callable(getattr(package, name)) for name in package.__all__)

    def test_importing_it_imports_nothing_of_ours_but_itself(self) -> None:
        """A host importing it loads no ``cli``, ``ldp`` or ``server_agg`` module (they could
        collide with the host's own modules of those names)."""
        code = (
            "import sys, twentyi_telemetry\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in"
            " {'cli', 'ldp', 'server_agg'}))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"
