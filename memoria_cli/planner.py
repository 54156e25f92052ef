"""The memory plan: which worker runs where, with how much KV cache, what context and concurrency. Pure.

vLLM facts this rests on (vLLM 0.32, vllm/v1/worker/gpu_worker.py and vllm/config/cache.py):
- `--gpu-memory-utilization` is a fraction of the GPU's TOTAL memory one instance may use; at start vLLM
  requires free >= GMU x total, then fills its share with KV cache unless `--kv-cache-memory-bytes` fixes it.
- A worker must hold one full `--max-model-len` sequence in its KV cache or it refuses to start.
- Non-KV memory = weights + peak activation + CUDA context/allocator + CUDA graphs (0 with --enforce-eager).
So: sum the fixed costs per GPU, keep a margin, share the rest as KV by weight (water-filling, each worker
capped at what it can use), derive context and concurrency, and fail before launching if floors do not fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from memoria_cli.errors import PlanError
from memoria_cli.inventory import Cpu, Gpu, Inventory
from memoria_cli.model_facts import Facts
from memoria_cli.profile import Kind, ModelEntry, Profile
from memoria_cli.units import GiB, MiB, fmt_size

# Per-kind defaults: (context wish, context floor, max concurrent sequences, peak activation on GPU).
KIND_DEFAULTS: dict[str, tuple[int, int, int, int]] = {
    "embedding": (8192, 512, 64, GiB // 2),
    "chat": (32768, 4096, 32, 1 * GiB),
    "vision": (16384, 4096, 8, 2 * GiB),
    "transcription": (448, 448, 4, 3 * GiB // 2),
}
CUDA_CONTEXT = 3 * GiB // 4  # CUDA context + allocator slack per process (DESIGN §2: 0.5-1 GiB)
CUDA_GRAPHS = GiB // 2  # captured graphs; 0 with --enforce-eager
GPU_MARGIN_FRACTION = 0.04  # of total, on top of what other processes already hold
CPU_PROCESS_OVERHEAD = 2 * GiB  # measured: ~2.4 GB RSS for a tiny model with 256 MiB KV (notes/cpu-stack.md)
CPU_ACTIVATION = GiB // 4
CPU_MARGIN_FRACTION = 0.10
CPU_PROXY_RESERVE = GiB // 2  # the LiteLLM proxy (~0.35 GB RSS) runs beside the workers
CPU_KV_FLOOR = 64 * MiB
CPU_KV_CAP = 2 * GiB  # RAM is shared with everything else: do not hoard it
CONTEXT_STEP = 16  # vLLM block size


@dataclass(frozen=True)
class WorkerPlan:
    name: str
    kind: Kind
    model: str
    devices: tuple[int, ...]  # GPU indexes; () on the CPU engine
    tensor_parallel: int
    dtype: str | None
    weights: int  # total across its GPUs
    fixed: int  # weights + activation + context + graphs, total across its GPUs
    kv_bytes: int  # total across its GPUs
    kv_per_token: int
    context: int
    max_num_seqs: int
    gmu: float | None  # per GPU; None on the CPU engine
    port: int
    cpu_cores: str | None = None  # VLLM_CPU_OMP_THREADS_BIND on the CPU engine
    facts_source: str = ""
    why: tuple[str, ...] = ()

    @property
    def sequences_at_full_context(self) -> float:
        return self.kv_bytes / max(1, self.kv_per_token * self.context)

    @property
    def budget(self) -> int:
        return self.fixed + self.kv_bytes


@dataclass(frozen=True)
class DevicePlan:
    index: int
    name: str
    total: int
    free: int
    margin: int
    planned: int

    @property
    def usable(self) -> int:
        return self.free - self.margin


@dataclass(frozen=True)
class Plan:
    engine: str
    workers: tuple[WorkerPlan, ...]
    devices: tuple[DevicePlan, ...]
    proxy_host: str
    proxy_port: int
    notes: tuple[str, ...] = field(default=())
    proxy_workers: int = 1
    proxy_fast_path: bool = True

    def worker(self, name: str) -> WorkerPlan:
        return next(w for w in self.workers if w.name == name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for w, wd in zip(self.workers, d["workers"], strict=True):
            wd["sequences_at_full_context"] = round(w.sequences_at_full_context, 2)
        return d


@dataclass(frozen=True)
class _Need:
    """What one worker needs, before placement."""

    entry: ModelEntry
    facts: Facts
    dtype: str | None
    weights: int
    kv_per_token: int
    activation: int
    graphs: int
    wish: int
    floor: int
    seqs: int

    def fixed(self, tp: int = 1) -> int:
        """Per-GPU fixed cost with `tp`-way tensor parallelism: weights and activations split, context not."""
        return math.ceil((self.weights + self.activation) / tp) + CUDA_CONTEXT + self.graphs

    def min_kv(self, tp: int = 1) -> int:
        return math.ceil(self.kv_per_token * self.floor / tp)

    def kv_cap(self, tp: int = 1) -> int:
        """More KV than this buys nothing: the wished context for every concurrent sequence."""
        return math.ceil(self.kv_per_token * self.wish * self.seqs / tp)


def _served_dtype(entry: ModelEntry, inv: Inventory) -> str | None:
    if entry.dtype:
        return entry.dtype
    if inv.engine == "cpu":
        return "float32"  # the dtype every x86/ARM CPU runs in vLLM's CPU build (notes/cpu-stack.md)
    if min(g.capability for g in inv.gpus) < (8, 0):
        return "float16"  # no bfloat16 before Ampere
    return None


def _need(entry: ModelEntry, facts: Facts, inv: Inventory) -> _Need:
    wish_d, floor_d, seqs_d, act_d = KIND_DEFAULTS[entry.kind]
    dtype = _served_dtype(entry, inv)
    weights, kv_tok = facts.served(dtype)
    wish = min(entry.context or wish_d, facts.max_context)
    floor = min(entry.min_context or min(floor_d, wish), wish)
    if inv.engine == "cpu":
        act, graphs = CPU_ACTIVATION, 0
    else:
        act = entry.activation if entry.activation is not None else act_d
        graphs = 0 if entry.enforce_eager else CUDA_GRAPHS
    return _Need(entry=entry, facts=facts, dtype=dtype, weights=weights, kv_per_token=kv_tok, activation=act,
                 graphs=graphs, wish=wish, floor=floor, seqs=entry.max_num_seqs or seqs_d)


def _waterfill(spare: int, weights: list[float], caps: list[int]) -> list[int]:
    """Share `spare` bytes by weight; whoever reaches its cap keeps the cap and the rest is shared again."""
    give = [0] * len(weights)
    open_ = [i for i in range(len(weights)) if caps[i] > 0]
    while spare > 0 and open_:
        total_w = sum(weights[i] for i in open_)
        capped = [i for i in open_ if give[i] + spare * weights[i] / total_w >= caps[i]]
        if not capped:
            for i in open_:
                give[i] += int(spare * weights[i] / total_w)
            break
        for i in capped:
            spare -= caps[i] - give[i]
            give[i] = caps[i]
            open_.remove(i)
    return give


def _context(kv: int, need: _Need, tp: int) -> int:
    fit = kv * tp // max(1, need.kv_per_token)
    return max(need.floor, min(need.wish, fit // CONTEXT_STEP * CONTEXT_STEP or need.floor))


def _why(need: _Need, context: int, dev_names: str) -> tuple[str, ...]:
    why = [f"sizes from {need.facts.source}"]
    if context < need.wish:
        why.append(f"context {context} < wished {need.wish}: KV cache is what is left on {dev_names}")
    if need.dtype:
        why.append(f"dtype {need.dtype}")
    return tuple(why)


def plan(profile: Profile, inv: Inventory, facts: dict[str, Facts]) -> Plan:
    """Fit every model of `profile` on `inv`, or raise PlanError saying what would make it fit."""
    needs = [_need(m, facts[m.name], inv) for m in profile.models]
    ports = {m.name: profile.worker_port_base + i for i, m in enumerate(profile.models)}
    if inv.engine == "cpu":
        assert inv.cpu is not None
        the_plan = _plan_cpu(profile, inv.cpu, needs, ports)
    else:
        the_plan = _plan_gpus(profile, inv.gpus, needs, ports)
    return replace(the_plan, proxy_workers=proxy_workers(profile.proxy.workers, inv),
                   proxy_fast_path=profile.proxy.fast_path)


def proxy_workers(setting: int | str, inv: Inventory) -> int:
    """LiteLLM processes. With the fast path one process relays thousands of embedding / chat requests a
    second; what still takes LiteLLM's own path costs ~10 ms of CPU each, so a big host gets more, up to 4
    (one per 16 cores). On the CPU engine the cores belong to vLLM: one (two measured worse on 2 cores)."""
    if setting != "auto":
        return int(setting)
    if inv.engine == "cpu":
        return 1
    return max(1, min(4, inv.cores // 16))


# ---------------------------------------------------------------------------------------------- GPUs


def _plan_gpus(profile: Profile, gpus: tuple[Gpu, ...], needs: list[_Need], ports: dict[str, int]) -> Plan:
    margins = {g.index: int(g.total * GPU_MARGIN_FRACTION) for g in gpus}
    room = {g.index: g.free - margins[g.index] for g in gpus}
    placed: dict[str, tuple[int, ...]] = {}
    _check_fp8(needs, gpus)
    order = sorted(needs, key=lambda n: n.fixed() + n.min_kv(), reverse=True)  # biggest first
    for n in order:
        spot = _place(n, gpus, room)
        if spot is None:
            raise _no_fit(profile, gpus, needs, margins, n)
        tp = len(spot)
        for i in spot:
            room[i] -= n.fixed(tp) + n.min_kv(tp)
        placed[n.entry.name] = spot
    notes = [_fp8_note(n, gpus) for n in needs if n.facts.quantization == "fp8"]

    # Share each GPU's spare memory by weight; a TP worker takes the smallest of its per-GPU shares.
    kv_per_gpu: dict[str, list[int]] = {n.entry.name: [] for n in needs}
    for g in gpus:
        here = [n for n in needs if g.index in placed[n.entry.name]]
        if not here:
            continue
        tps = [len(placed[n.entry.name]) for n in here]
        caps = [max(0, n.kv_cap(tp) - n.min_kv(tp)) for n, tp in zip(here, tps, strict=True)]
        extra = _waterfill(max(0, room[g.index]), [n.entry.kv_weight for n in here], caps)
        for n, tp, e in zip(here, tps, extra, strict=True):
            kv_per_gpu[n.entry.name].append(n.min_kv(tp) + e)

    workers, planned = [], {g.index: 0 for g in gpus}
    for n in needs:
        spot = placed[n.entry.name]
        tp = len(spot)
        kv_gpu = min(kv_per_gpu[n.entry.name])
        per_gpu = n.fixed(tp) + kv_gpu
        for i in spot:
            planned[i] += per_gpu
        total = min(gpus[i].total for i in spot)
        context = _context(kv_gpu, n, tp)
        names = ", ".join(f"GPU {i}" for i in spot)
        workers.append(WorkerPlan(
            name=n.entry.name, kind=n.entry.kind, model=n.entry.model, devices=spot, tensor_parallel=tp,
            dtype=n.dtype, weights=n.weights, fixed=n.fixed(tp) * tp, kv_bytes=kv_gpu * tp,
            kv_per_token=n.kv_per_token, context=context, max_num_seqs=n.seqs,
            gmu=math.ceil(per_gpu / total * 1000) / 1000, port=ports[n.entry.name],
            facts_source=n.facts.source, why=_why(n, context, names)))
    devices = tuple(DevicePlan(g.index, g.name, g.total, g.free, margins[g.index], planned[g.index]) for g in gpus)
    return Plan(engine="cuda", workers=tuple(workers), devices=devices, proxy_host=profile.proxy.host,
                proxy_port=profile.proxy.port, notes=tuple(notes))


def _place(n: _Need, gpus: tuple[Gpu, ...], room: dict[int, int]) -> tuple[int, ...] | None:
    """The GPU with the most room left (so spare memory, hence KV cache, spreads over all GPUs); failing
    that, the roomiest group of 2, 4 or 8 GPUs for tensor parallelism."""
    best = max(gpus, key=lambda g: room[g.index])
    if room[best.index] >= n.fixed() + n.min_kv():
        return (best.index,)
    for tp in (2, 4, 8):
        fits = [g.index for g in gpus if room[g.index] >= n.fixed(tp) + n.min_kv(tp)]
        if len(fits) >= tp:
            return tuple(fits[:tp])
    return None


def _check_fp8(needs: list[_Need], gpus: tuple[Gpu, ...]) -> None:
    cap = min(g.capability for g in gpus)
    for n in needs:
        if n.facts.quantization == "fp8" and cap < (8, 0):
            raise PlanError(f"{n.entry.name} is an FP8 checkpoint; vLLM runs FP8 only on compute capability >= 8.0 "
                            f"({gpus[0].name} is {cap[0]}.{cap[1]})",
                            f"point {n.entry.name} at a 16-bit checkpoint, or drop it")


def _fp8_note(n: _Need, gpus: tuple[Gpu, ...]) -> str:
    cap = min(g.capability for g in gpus)
    if cap >= (8, 9):
        return f"{n.entry.name}: FP8 runs natively (compute capability {cap[0]}.{cap[1]})"
    return f"{n.entry.name}: FP8 runs weight-only via Marlin (compute capability {cap[0]}.{cap[1]} < 8.9)"


def _no_fit(profile: Profile, gpus: tuple[Gpu, ...], needs: list[_Need], margins: dict[int, int],
            failed: _Need) -> PlanError:
    """Say how much is missing and what would make it fit: dropping a model, or a lower context floor."""
    need = sum(n.fixed() + n.min_kv() for n in needs)
    usable = sum(g.free - margins[g.index] for g in gpus)
    where = f"{len(gpus)}x {gpus[0].name}" if len(gpus) > 1 else gpus[0].name
    fixes = []
    for n in needs:
        rest = [m for m in needs if m is not n]
        if rest and _fits(gpus, margins, rest):
            fixes.append(f"drop {n.entry.name}")
    if not fixes:  # no single model: drop the biggest until the rest fits
        rest, dropped = sorted(needs, key=lambda n: n.fixed() + n.min_kv()), []
        while len(rest) > 1 and not _fits(gpus, margins, rest):
            dropped.append(rest.pop().entry.name)
        if _fits(gpus, margins, rest):
            fixes.append("drop " + " and ".join(dropped))
    for n in sorted(needs, key=lambda n: -n.kv_per_token * n.floor):
        deficit = need - usable
        lower = (n.floor - math.ceil(deficit / max(1, n.kv_per_token))) // 1024 * 1024
        if lower >= 1024 and lower < n.floor:
            trial = [replace(m, floor=lower) if m is n else m for m in needs]
            if _fits(gpus, margins, trial):
                fixes.append(f"lower {n.entry.name}'s min_context to {lower}")
                break
    fixes.append("use a bigger GPU")
    msg = (f"the plan does not fit: {failed.entry.name} has no room; all models need {fmt_size(need)}, "
           f"{fmt_size(usable)} usable on {where}")
    return PlanError(msg, ", or ".join(fixes))


def _fits(gpus: tuple[Gpu, ...], margins: dict[int, int], needs: list[_Need]) -> bool:
    room = {g.index: g.free - margins[g.index] for g in gpus}
    for n in sorted(needs, key=lambda n: n.fixed() + n.min_kv(), reverse=True):
        spot = _place(n, gpus, room)
        if spot is None:
            return False
        for i in spot:
            room[i] -= n.fixed(len(spot)) + n.min_kv(len(spot))
    return True


# ----------------------------------------------------------------------------------------------- CPU


def _cpu_cores(count: int, cores: int) -> list[str]:
    """Split the cores between workers: contiguous ranges when there are enough, else round-robin."""
    if count <= 0:
        return []
    if cores >= count:
        per = cores // count
        return [f"{i * per}-{i * per + per - 1}" if per > 1 else str(i * per) for i in range(count)]
    return [str(i % cores) for i in range(count)]


def _plan_cpu(profile: Profile, cpu: Cpu, needs: list[_Need], ports: dict[str, int]) -> Plan:
    margin = int(cpu.total * CPU_MARGIN_FRACTION) + CPU_PROXY_RESERVE
    usable = cpu.available - margin
    fixed = [n.weights + CPU_PROCESS_OVERHEAD + n.activation for n in needs]
    floors = [max(CPU_KV_FLOOR, n.min_kv()) for n in needs]
    need = sum(fixed) + sum(floors)
    if need > usable:
        biggest = max(range(len(needs)), key=lambda i: fixed[i] + floors[i])
        raise PlanError(
            f"the plan does not fit in RAM: the models need {fmt_size(need)}, {fmt_size(usable)} usable "
            f"of {fmt_size(cpu.available)} available",
            f"drop {needs[biggest].entry.name}, close other programs, or use a smaller profile")
    caps = [max(0, min(CPU_KV_CAP, max(f, n.kv_per_token * n.wish * 2)) - f)
            for n, f in zip(needs, floors, strict=True)]
    extra = _waterfill(usable - need, [n.entry.kv_weight for n in needs], caps)
    cores = _cpu_cores(len(needs), cpu.cores)
    workers = []
    for i, n in enumerate(needs):
        kv = floors[i] + extra[i]
        context = _context(kv, n, 1)
        workers.append(WorkerPlan(
            name=n.entry.name, kind=n.entry.kind, model=n.entry.model, devices=(), tensor_parallel=1,
            dtype=n.dtype, weights=n.weights, fixed=fixed[i], kv_bytes=kv, kv_per_token=n.kv_per_token,
            context=context, max_num_seqs=n.seqs, gmu=None, port=ports[n.entry.name], cpu_cores=cores[i],
            facts_source=n.facts.source, why=(*_why(n, context, "the CPU"), f"cores {cores[i]}")))
    dev = DevicePlan(index=-1, name=cpu.name, total=cpu.total, free=cpu.available, margin=margin,
                     planned=sum(w.budget for w in workers))
    notes = ("CPU engine (vLLM CPU build): no GPU found",)
    return Plan(engine="cpu", workers=tuple(workers), devices=(dev,), proxy_host=profile.proxy.host,
                proxy_port=profile.proxy.port, notes=notes)
