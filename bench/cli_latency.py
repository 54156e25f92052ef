"""Bench 4: `memoria --help`, `memoria status` and `memoria plan` wall time vs `python -c pass`.

usage: python bench/cli_latency.py [ROUNDS]     (no stack needed)
"""

from __future__ import annotations

import subprocess
import sys

from common import interleave, median, timed

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 15
BASE = [sys.executable, "-c", "pass"]
CASES = {
    "memoria --help": [sys.executable, "-m", "memoria_cli", "--help"],
    "memoria status": [sys.executable, "-m", "memoria_cli", "status"],
    "memoria plan --gpus L4": [sys.executable, "-m", "memoria_cli", "plan", "--gpus", "L4"],
}


def run(cmd: list[str]) -> float:
    return timed(lambda: subprocess.run(cmd, capture_output=True))


print(f"{'command':28} {'median ms':>10} {'python -c pass ms':>18} {'ratio':>6}")
worst = 0.0
for name, cmd in CASES.items():
    a, b = interleave(ROUNDS, lambda c=cmd: run(c), lambda: run(BASE))
    ratio = median(a) / median(b)
    worst = max(worst, ratio)
    print(f"{name:28} {median(a) * 1000:10.0f} {median(b) * 1000:18.0f} {ratio:6.2f}")
help_ms = median([run(CASES["memoria --help"]) for _ in range(ROUNDS)]) * 1000
print(f"headline: memoria --help {help_ms:.0f} ms (target < 150 ms); slowest command {worst:.2f}x python -c pass")
