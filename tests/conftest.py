"""Shared fixtures: no in-process test ever starts a real detached worker by accident."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from twentyi_telemetry import worker
from twentyi_telemetry.state import Paths


@pytest.fixture(autouse=True)
def worker_starts(monkeypatch: pytest.MonkeyPatch) -> list[Paths]:
    """Every ``worker.start`` made in this process, recorded instead of run (subprocess tests,
    which run hosts in processes of their own, start real workers)."""
    calls: list[Paths] = []

    def fake_start(paths: Paths, env: Mapping[str, str]) -> int | None:
        calls.append(paths)
        return None

    monkeypatch.setattr(worker, "start", fake_start)
    return calls


def enable_dirs(paths: Paths) -> None:
    """What ``enable`` leaves behind besides the consent file: the state folder (host commands
    never create it, so a purge cannot be undone by a command already counting)."""
    paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def tree(root: Path) -> list[Any]:  # pragma: no cover - debugging aid
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
