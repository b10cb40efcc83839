"""Tests for server_agg.engine_dask: on a LocalCluster of 2 workers the Dask engine's counts and
estimates equal the local engine's exactly.

The cluster runs its 2 workers as threads (``processes=False``): it starts in well under a
second, and exact equality does not depend on where the counting runs. One cluster serves the
whole module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ldp.envelope import seal
from server_agg.aggregate import ParquetSource, StoreSource, aggregate, count_source
from server_agg.engine_dask import count_parquet, dask_aggregate, partitions
from server_agg.export import export
from server_agg.keys import generate, load_private, load_public
from server_agg.simulate import GeneratorSource, make_population
from server_agg.store import Store

PERIODS = ("2026-W50", "2026-W51")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A LocalCluster with 2 single-thread workers (threads, not processes) and its client."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A store of three days (valid reports plus garbage), its keys and its Parquet export."""
    root = tmp_path_factory.mktemp("dask")
    keys = generate(root / "keys")
    public = load_public(keys.public_path)
    population = make_population(400, seed=41, periods=PERIODS)
    sealed = [
        seal(p, public) for p in population.reports(GeneratorSource(np.random.default_rng(4)))
    ]
    garbage = [bytes([i]) * (50 + i) for i in range(9)]
    days = iter([date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 16)])
    today = {"day": next(days)}
    with Store(root / "store.sqlite", clock=lambda: today["day"]) as store:
        third = len(sealed) // 3
        store.add_batch(sealed[:third] + garbage[:3])
        today["day"] = next(days)
        store.add_batch(sealed[third : 2 * third] + garbage[3:6])
        today["day"] = next(days)
        store.add_batch(sealed[2 * third :] + garbage[6:])
        export(store, root / "parquet")
    return {"keys": root / "keys", "store": root / "store.sqlite", "parquet": root / "parquet"}


class TestDaskEngine:
    """Dask and local engines agree exactly."""

    def test_counts_equal_local_engine(self, client: Any, exported: dict[str, Path]) -> None:
        """Support vectors, n, rejects and read counts are identical to the local engine's."""
        private = load_private(exported["keys"])
        files = ParquetSource(exported["parquet"]).files()
        assert len(partitions(files)) == 3  # one row group per day: three tasks
        on_dask = count_parquet(files, exported["keys"] / "private.pem", client=client)
        local = count_source(StoreSource(exported["store"]), private)
        assert on_dask.to_plain() == local.to_plain()
        assert on_dask.rejects == {"decrypt": 9}

    def test_estimates_equal_local_engine(self, client: Any, exported: dict[str, Path]) -> None:
        """Every estimate, standard error and support count equals the local engine's."""
        private = load_private(exported["keys"])
        local = aggregate(StoreSource(exported["store"]), private, kind="usage", delta=None)
        on_dask = dask_aggregate(
            exported["parquet"], exported["keys"], kind="usage", delta=None, client=client
        )
        assert on_dask.engine == "dask"
        assert [(g.kind, g.period, g.n) for g in on_dask.groups] == [
            (g.kind, g.period, g.n) for g in local.groups
        ]
        assert on_dask.excluded == local.excluded
        for mine, theirs in zip(on_dask.groups, local.groups, strict=True):
            for a, b in zip(mine.fields, theirs.fields, strict=True):
                assert a.support == b.support
                np.testing.assert_array_equal(a.estimate.freq, b.estimate.freq)
                np.testing.assert_array_equal(a.estimate.std, b.estimate.std)

    @pytest.mark.parametrize(("weeks", "period"), [("auto", None), (2, PERIODS[-1])])
    def test_windows_and_trends_equal_local_engine(
        self, client: Any, exported: dict[str, Path], weeks: int | str, period: str | None
    ) -> None:
        """--weeks auto and --weeks 2 pool the same windows, with the same choices, estimates
        and trends, on both engines."""
        private = load_private(exported["keys"])
        options: dict[str, Any] = {"delta": None, "weeks": weeks, "period": period}
        local = aggregate(StoreSource(exported["store"]), private, **options)
        on_dask = dask_aggregate(exported["parquet"], exported["keys"], client=client, **options)
        assert [(g.kind, g.period, g.n, g.window, g.choice) for g in on_dask.groups] == [
            (g.kind, g.period, g.n, g.window, g.choice) for g in local.groups
        ]
        assert all(g.window is not None and len(g.window.periods) >= 1 for g in local.groups)
        assert (on_dask.excluded, on_dask.window) == (local.excluded, local.window)
        for mine, theirs in zip(on_dask.groups, local.groups, strict=True):
            for a, b in zip(mine.fields, theirs.fields, strict=True):
                assert a.support == b.support
                np.testing.assert_array_equal(a.estimate.freq, b.estimate.freq)
                np.testing.assert_array_equal(a.estimate.std, b.estimate.std)
        assert on_dask.trends == local.trends and len(local.trends) == 2

    def test_cli_on_a_scheduler_address(self, client: Any, exported: dict[str, Path]) -> None:
        """``aggregate --engine dask --scheduler ADDR`` prints the same JSON numbers as local."""
        import json

        from server_agg.app import app

        runner = CliRunner()
        base = ["aggregate", "--key", str(exported["keys"]), "--format", "json"]
        address = client.scheduler.address
        remote = runner.invoke(
            app,
            [
                *base,
                "--parquet",
                str(exported["parquet"]),
                "--engine",
                "dask",
                "--scheduler",
                address,
            ],
        )
        assert remote.exit_code == 0, remote.output
        local = runner.invoke(app, [*base, "--store", str(exported["store"])])
        assert local.exit_code == 0, local.output
        a, b = json.loads(remote.stdout), json.loads(local.stdout)
        assert a["engine"] == "dask" and b["engine"] == "local"
        assert a["reports"] == b["reports"]
        assert a["groups"] == b["groups"]
        # The default window is auto on both, with the same choices and trends.
        assert a["window"]["weeks"] == b["window"]["weeks"] == "auto"
        assert a["trends"] == b["trends"] != []

    def test_dask_needs_parquet(self, exported: dict[str, Path]) -> None:
        """The Dask engine refuses a SQLite store with a one-line error saying what to do."""
        from server_agg.app import app

        result = CliRunner().invoke(
            app,
            [
                "aggregate",
                "--key",
                str(exported["keys"]),
                "--store",
                str(exported["store"]),
                "--engine",
                "dask",
            ],
        )
        assert result.exit_code == 1
        assert "--engine dask reads Parquet exports" in result.output

    def test_missing_key_file_is_named(self, client: Any, exported: dict[str, Path]) -> None:
        """A key path that is not there is an error naming it, before any task runs."""
        from server_agg.aggregate import AggregateError

        with pytest.raises(AggregateError, match="no private key file at"):
            dask_aggregate(exported["parquet"], exported["keys"] / "nope.pem", client=client)


@pytest.mark.slow
class TestRealCluster:
    """Against `dask scheduler` and `dask worker` processes started as a user would."""

    def test_workers_that_ran_are_reported(self, exported: dict[str, Path], tmp_path: Path) -> None:
        """The JSON's workers counts the worker processes that counted partitions (2), and the
        estimates still equal the local engine's."""
        import json
        import os
        import signal
        import subprocess
        import sys
        import time

        from server_agg.app import app

        dask = str(Path(sys.executable).with_name("dask"))
        scheduler_file = tmp_path / "scheduler.json"
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        common = {"cwd": tmp_path, "env": env, "start_new_session": True}
        procs = [
            subprocess.Popen(
                [
                    dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(scheduler_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                **common,
            )
        ]
        try:
            deadline = time.monotonic() + 60
            while not scheduler_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert scheduler_file.exists(), "the scheduler did not start within 60 s"
            procs.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--nworkers",
                        "2",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    **common,
                )
            )
            address = json.loads(scheduler_file.read_text())["address"]
            from distributed import Client

            with Client(address, timeout=60) as watcher:
                watcher.wait_for_workers(2, timeout=60)
            base = ["aggregate", "--key", str(exported["keys"]), "--format", "json"]
            remote = CliRunner().invoke(
                app,
                [
                    *base,
                    "--parquet",
                    str(exported["parquet"]),
                    "--engine",
                    "dask",
                    "--scheduler",
                    address,
                ],
            )
            assert remote.exit_code == 0, remote.output
            local = CliRunner().invoke(app, [*base, "--store", str(exported["store"])])
            a, b = json.loads(remote.stdout), json.loads(local.stdout)
            # Three partitions over two single-thread worker processes: one or both ran.
            assert 1 <= a["workers"] <= 2
            assert a["groups"] == b["groups"]
        finally:
            for proc in reversed(procs):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
