"""The one terminal: data to stdout, people's messages to stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from rich.console import Console


@cache
def out() -> Console:
    # Tables piped to a file or another program keep their columns instead of folding at 80.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


@cache
def err() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


@contextmanager
def progress(label: str, total: int, show: bool = True) -> Iterator[Callable[..., None]]:
    """advance(n=1) for a transient bar on stderr; a no-op when not `show` (one item is not worth a bar)."""
    if not show:

        def nothing(n: int = 1) -> None:
            return None

        yield nothing
        return
    from rich.progress import Progress

    with Progress(console=err(), transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance


def say(msg: str) -> None:
    err().print(msg)


def debug_enabled() -> bool:
    return os.environ.get("MEMORIA_DEBUG", "") not in ("", "0") or "--debug" in sys.argv
