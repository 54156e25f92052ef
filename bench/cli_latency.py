"""Bench 4: `memoria --help`, `memoria status` and `memoria plan` wall time vs `python -c pass`; with
`--against REV`, side by side with the same commands of another commit (checked out to a temporary folder
and run with the same interpreter), so a change's cost to start-up is measured in one run.

usage: python bench/cli_latency.py [ROUNDS] [--against REV]     (no stack needed)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import interleave, median, timed

args = [a for a in sys.argv[1:] if not a.startswith("--")]
ROUNDS = int(args[0]) if args else 15
AGAINST = sys.argv[sys.argv.index("--against") + 1] if "--against" in sys.argv else None
ROOT = Path(__file__).resolve().parent.parent
BASE = [sys.executable, "-c", "pass"]
CASES = {
    "memoria --help": ["--help"],
    "memoria status": ["status"],
    "memoria plan --gpus L4": ["plan", "--gpus", "L4"],
}
HOME = tempfile.mkdtemp(prefix="memoria-bench-")  # `status` with nothing running, the same for both trees


def run(tree: Path | None, argv: list[str]) -> float:
    env = {**os.environ, "MEMORIA_HOME": HOME}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)  # ahead of the editable install: that commit's memoria_cli
    cmd = [sys.executable, "-m", "memoria_cli", *argv]
    return timed(lambda: subprocess.run(cmd, capture_output=True, env=env, cwd=tree or ROOT))


def checkout(rev: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix="memoria-rev-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


if AGAINST:
    old = checkout(AGAINST)
    print(f"{'command':28} {'this tree ms':>13} {AGAINST + ' ms':>14} {'ratio':>6}")
    worst = 0.0
    for name, argv in CASES.items():
        a, b = interleave(ROUNDS, lambda v=argv: run(ROOT, v), lambda v=argv: run(old, v))
        ratio = median(a) / median(b)
        worst = max(worst, ratio) if name != "memoria plan --gpus L4" else worst
        print(f"{name:28} {median(a) * 1000:13.0f} {median(b) * 1000:14.0f} {ratio:6.2f}")
    print(f"headline: --help and status take {worst:.2f}x the time they took at {AGAINST} (target <= 1.0)")
    sys.exit(0)

print(f"{'command':28} {'median ms':>10} {'python -c pass ms':>18} {'ratio':>6}")
worst = 0.0
for name, argv in CASES.items():
    a, b = interleave(
        ROUNDS, lambda v=argv: run(None, v), lambda: timed(lambda: subprocess.run(BASE, capture_output=True))
    )
    ratio = median(a) / median(b)
    worst = max(worst, ratio)
    print(f"{name:28} {median(a) * 1000:10.0f} {median(b) * 1000:18.0f} {ratio:6.2f}")
help_ms = median([run(None, CASES["memoria --help"]) for _ in range(ROUNDS)]) * 1000
print(f"headline: memoria --help {help_ms:.0f} ms (target < 150 ms); slowest command {worst:.2f}x python -c pass")
