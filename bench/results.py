"""Write one benchmark's results into its own section of BENCHMARKS.md.

Each benchmark owns the block between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` and
rewrites only that block, so benchmarks run at different times never clobber each other.
"""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every table here is written by a script in `bench/`, which runs ours and the peers side by\n"
    "side in one process on the same data. Re-run a script to refresh its section.\n"
)


def machine_line() -> str:
    """One line saying where and when the numbers were taken."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"_Measured {when} on {platform.machine()}, Python {platform.python_version()}._"


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``body``."""
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- bench:{name} -->\n{body.rstrip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.DOTALL
    )
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    path.write_text(text)
