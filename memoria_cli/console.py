"""The one terminal: data to stdout, people's messages to stderr."""

from __future__ import annotations

import os
import sys
from functools import cache

from rich.console import Console


@cache
def out() -> Console:
    # Tables piped to a file or another program keep their columns instead of folding at 80.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


@cache
def err() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def say(msg: str) -> None:
    err().print(msg)


def debug_enabled() -> bool:
    return os.environ.get("MEMORIA_DEBUG", "") not in ("", "0") or "--debug" in sys.argv
