"""The progress bar of a local analysis (rich, on a terminal only).

Apart so that the pipeline's one optional display dependency is imported only when shown.
"""

from __future__ import annotations

import sys
from typing import Any


class _Progress:
    """A rich progress bar on stderr when it is a terminal; nothing at all otherwise.

    Refreshed by hand on each chunk rather than by rich's refresh thread, so that the process
    stays single-threaded and worker processes can be forked.
    """

    def __init__(self, total: int | None, enabled: bool | None) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("reports"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            auto_refresh=False,
        )
        self._task = self._bar.add_task("reports", total=total)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, k: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, k)
            self._bar.refresh()
