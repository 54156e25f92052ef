"""What each supervised process really holds: per GPU from NVML on a GPU host (vLLM's engine core is a
child of the API server, so the whole process tree counts), resident memory on the CPU engine. `memoria
status` reads it live; the supervisor samples it every few seconds into state.json, where `/metrics` and the
status page set it beside the plan. A thin layer over psutil and NVML."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from memoria_cli.core.inventory import Gpu, probe_gpus

EVERY = 5.0  # seconds between the supervisor's samples: a walk of every process tree costs a few ms


@dataclass(frozen=True)
class Root:
    pid: int
    devices: int  # GPUs the worker spans (its NVML figure is given per GPU)


def worker_memory(roots: dict[str, Root], gpu: bool, gpus: Iterable[Gpu] | None = None) -> dict[str, int]:
    """name -> bytes: per GPU on a GPU host, resident on the CPU engine. `gpus`: NVML's view, probed if not
    given. A process that is gone is left out."""
    by_pid: dict[int, int] = {}
    if gpu:
        for g in gpus if gpus is not None else probe_gpus():
            for proc in g.processes:
                by_pid[proc.pid] = by_pid.get(proc.pid, 0) + proc.used
    out = {}
    for name, r in roots.items():
        try:
            root = psutil.Process(r.pid)
            tree = [root, *root.children(recursive=True)]
            if gpu:
                out[name] = sum(by_pid.get(t.pid, 0) for t in tree) // max(1, r.devices)
            else:
                out[name] = sum(t.memory_info().rss for t in tree)
        except (psutil.Error, KeyError, TypeError):
            continue
    return out
