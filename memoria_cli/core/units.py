"""Byte sizes as people write them ("24GiB", "512MiB", "1.5G") and as tables show them."""

from __future__ import annotations

import re

from memoria_cli.core.errors import InputError

KiB = 1024
MiB = 1024**2
GiB = 1024**3

_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": 1000,
    "kib": KiB,
    "m": MiB,
    "mb": 1000**2,
    "mib": MiB,
    "g": GiB,
    "gb": 1000**3,
    "gib": GiB,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """Bytes from "24GiB", "80GB", "512MiB" or a plain number of bytes."""
    if isinstance(text, int | float):
        return int(text)
    m = _SIZE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"not a size: {text!r}", "write it like 24GiB, 512MiB or 80GB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def fmt_size(n: int | float) -> str:
    """Short binary size for tables: 1.5 GiB, 384 MiB."""
    n = float(n)
    if abs(n) >= GiB:
        return f"{n / GiB:.1f} GiB"
    if abs(n) >= MiB:
        return f"{n / MiB:.0f} MiB"
    if abs(n) >= KiB:
        return f"{n / KiB:.0f} KiB"
    return f"{n:.0f} B"


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|min|h)?\s*$")
_SECONDS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str | int | float) -> float:
    """Seconds from "90s", "10m", "1.5h" or a plain number of seconds. ValueError otherwise (pydantic then
    names the profile key)."""
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (write it like 90s, 10m or 1h, or a number of seconds)")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def fmt_duration(seconds: float) -> str:
    """90 -> '90 s', 600 -> '10 min', 5400 -> '1.5 h'."""
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 120:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


# Seconds a request may take, the client's --timeout and the proxy's request_timeout alike: a long answer (a
# page of OCR on a CPU, an hour of audio) is slow, not stuck.
REQUEST_TIMEOUT = 600.0
