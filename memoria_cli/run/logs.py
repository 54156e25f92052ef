"""Reading the logs the supervised processes write (one file each under the home's logs/)."""

from __future__ import annotations

import os
from pathlib import Path


def tail(path: Path, lines: int) -> list[str]:
    """The last lines of a log, read from the end (logs grow large)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024 * max(1, lines // 50)))
            return f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []
