"""What each worker asks of a Kubernetes node's GPUs: whole cards, or a slice of one where the plan puts
several workers on the same card.

Kubernetes' device plugin hands out whole GPUs. Workers that share a card need HAMi, whose
`nvidia.com/gpumem` (MiB) caps a container's memory and makes the card look that big from inside (its CUDA
hooks report the cap as the device's total). vLLM reads `--gpu-memory-utilization` as a fraction of that
total, so a slice gets the utilization that gives the worker the same bytes the plan gave it on the card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from memoria_cli.core.plan import Plan, WorkerPlan
from memoria_cli.core.planner import GMU_STEP
from memoria_cli.core.units import MiB

# Inside a slice nothing else runs; what is left is utilization's rounding (total / 10^4, < 2 MiB on 16 GiB)
# and allocations outside torch's count that vLLM does not see at its start.
SLICE_HEADROOM = 64 * MiB


@dataclass(frozen=True)
class GpuShare:
    gpus: int  # nvidia.com/gpu
    slice_mib: int | None  # nvidia.com/gpumem per GPU (HAMi); None: whole cards
    gmu: float  # --gpu-memory-utilization, of the card's total or of the slice's

    @property
    def slice_bytes(self) -> int:
        return (self.slice_mib or 0) * MiB


def requested_per_gpu(w: WorkerPlan) -> int:
    """What the plan lets vLLM take per GPU inside its utilization budget (weights, activation, graphs,
    non-torch memory and the KV cache): its budget less the CUDA context, which is outside it."""
    return w.budget // w.tensor_parallel - w.cuda_context


def shared_cards(plan: Plan) -> set[int]:
    """The GPU indexes the plan gives to more than one worker."""
    seen: dict[int, int] = {}
    for w in plan.workers:
        for d in w.devices:
            seen[d] = seen.get(d, 0) + 1
    return {d for d, n in seen.items() if n > 1}


def gpu_shares(plan: Plan) -> dict[str, GpuShare]:
    """Per worker: whole cards with the plan's own utilization, or a HAMi slice sized to its budget."""
    shared = shared_cards(plan)
    out = {}
    for w in plan.workers:
        if w.gmu is None:
            continue  # the CPU engine: no GPU to ask for
        if not shared.intersection(w.devices):
            out[w.name] = GpuShare(w.tensor_parallel, None, w.gmu)
            continue
        inside = requested_per_gpu(w)
        mib = math.ceil((inside + w.cuda_context + SLICE_HEADROOM) / MiB)
        total = mib * MiB
        # vLLM asks for ceil(total x util) (v1/worker/utils.py `request_memory`): round up, like the planner
        gmu = math.ceil(inside / total * GMU_STEP) / GMU_STEP
        out[w.name] = GpuShare(w.tensor_parallel, mib, gmu)
    return out


def slice_kv_bytes(w: WorkerPlan, share: GpuShare) -> int:
    """The KV cache per GPU vLLM finds in a slice: what it asks for less what the plan puts before the cache."""
    requested = math.ceil(share.slice_bytes * share.gmu)
    return requested - (requested_per_gpu(w) - w.kv_bytes // w.tensor_parallel)
