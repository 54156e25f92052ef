"""What a vLLM worker said about its memory at start-up, and how that compares with its plan. Pure.

The lines are vLLM 0.32's own (format strings in vllm/v1/worker/gpu_model_runner.py "Model loading took",
gpu_worker.py "Available KV cache memory", cpu_worker.py "Explicitly set (...) GiB for KV cache",
gpu_model_runner.py "Estimated CUDA graph memory" / "Graph capturing finished", kv_cache_utils.py
"KV cache size: N tokens, Maximum concurrency for N tokens per request"); tests/test_vllm_report.py checks
that those format strings are still in the installed vLLM.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from memoria_cli.core.plan import WorkerPlan
from memoria_cli.core.units import GiB, fmt_size

_LINES: dict[str, re.Pattern[str]] = {
    "weights": re.compile(r"Model loading took ([\d.]+) GiB memory"),
    "kv_memory": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    "kv_memory_cpu": re.compile(r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache"),
    "graphs_estimate": re.compile(r"Estimated CUDA graph memory: ([\d.]+) GiB total"),
    "graphs": re.compile(r"Graph capturing finished in \d+ secs, took ([\d.]+) GiB"),
}
_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
BUDGET_TOLERANCE = 0.02  # NVML counts a little the allocator has not handed out; more than 2 % over is real


@dataclass(frozen=True)
class StartupReport:
    weights: int | None = None
    kv_memory: int | None = None
    kv_tokens: int | None = None
    max_concurrency: float | None = None
    context: int | None = None
    graphs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_startup(lines: list[str]) -> StartupReport:
    """The last value of each figure in a worker's log (a restarted worker logs them again)."""
    found: dict[str, Any] = {}
    for line in lines:
        for key, pattern in _LINES.items():
            if m := pattern.search(line):
                found[key.removesuffix("_cpu").removesuffix("_estimate")] = int(float(m.group(1)) * GiB)
        if m := _KV_TOKENS.search(line):
            found["kv_tokens"] = int(m.group(1).replace(",", ""))
        if m := _CONCURRENCY.search(line):
            found["context"] = int(m.group(1).replace(",", ""))
            found["max_concurrency"] = float(m.group(2))
    return StartupReport(**found)


def budget_of(worker: WorkerPlan, totals: dict[int, int]) -> int | None:
    """A GPU worker's ceiling per GPU: its CUDA context plus ceil(total x util), as vLLM requests it."""
    if worker.gmu is None or not worker.devices:
        return None
    total = min(totals[d] for d in worker.devices)
    return worker.cuda_context + math.ceil(total * worker.gmu)


def warnings(worker: WorkerPlan, report: StartupReport, used: int | None, totals: dict[int, int]) -> list[str]:
    """Plan against what vLLM reported and what NVML sees the worker's processes hold (per GPU)."""
    out = []
    name = worker.name
    budget = budget_of(worker, totals)
    if budget is not None and used is not None and used > budget * (1 + BUDGET_TOLERANCE):
        out.append(
            f"{name} holds {fmt_size(used)} of GPU memory, over its budget of {fmt_size(budget)}: "
            "it takes memory planned for its neighbours"
        )
    planned_kv = worker.kv_bytes // max(1, worker.tensor_parallel)
    if report.kv_memory is not None and report.kv_memory < planned_kv * 0.9:
        out.append(
            f"{name}: vLLM found {fmt_size(report.kv_memory)} for its KV cache, {fmt_size(planned_kv)} "
            "planned: its activation or graphs took more than estimated"
        )
    if report.kv_tokens is not None and worker.kv_tokens and report.kv_tokens < worker.kv_tokens * 0.9:
        out.append(f"{name}: {report.kv_tokens} KV tokens, {worker.kv_tokens} planned")
    return out
