"""The plan's records: what each worker gets, on which device, and the proxy's settings. Plain data, light to
import (state.json readers load it): the planning itself is in planner.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from memoria_cli.core.gpu_memory import BLOCK_SIZE, CPU_BATCHED_TOKENS
from memoria_cli.core.kinds import Kind
from memoria_cli.core.units import MiB


@dataclass(frozen=True)
class WorkerPlan:
    name: str
    kind: Kind
    model: str
    devices: tuple[int, ...]  # GPU indexes; () on the CPU engine
    tensor_parallel: int
    dtype: str | None
    weights: int  # total across its GPUs
    fixed: int  # everything but the KV cache (CUDA contexts included), total across its GPUs
    kv_bytes: int  # total across its GPUs
    kv_per_token: int
    context: int
    max_num_seqs: int
    gmu: float | None  # per GPU; None on the CPU engine
    port: int
    cpu_cores: str | None = None  # VLLM_CPU_OMP_THREADS_BIND on the CPU engine
    facts_source: str = ""
    why: tuple[str, ...] = ()
    max_num_batched_tokens: int = CPU_BATCHED_TOKENS
    activation: int = 0  # per GPU (the profile run's peak)
    graphs: int = 0  # per GPU
    non_torch: int = 0  # per GPU
    cuda_context: int = 0  # per GPU, outside the utilization figure
    kv_cache_dtype: str = "auto"
    block_size: int = BLOCK_SIZE  # --block-size: the contexts are whole blocks of it
    kv_tokens: int = 0  # what vLLM will log as "KV cache size: N tokens"
    concurrency: float = 0.0  # vLLM's "Maximum concurrency for <context> tokens per request"
    idle: str = "never"  # after `idle_after` s without requests: never | sleep | stop (sleep is stop on the CPU)
    idle_after: float = 0.0
    sleep_level: int = 0  # vLLM's sleep level, with idle == "sleep"
    hold: float = 0.0  # seconds the proxy holds a request while the worker wakes
    slot: str = ""  # workers of one slot take turns: one awake at a time
    asleep: int = 0  # per GPU: what it still holds asleep (its CUDA context, non-torch memory and graphs)
    # A span (profile `span:`): this host's pipeline stage of one instance over several hosts (vLLM multi-node)
    pipeline_parallel: int = 1  # the span's hosts: --pipeline-parallel-size and --nnodes
    node_rank: int = 0  # --node-rank: 0 serves the API, the others run --headless
    layers: tuple[int, int] = (0, 0)  # [start, end) of the decoder layers this stage holds
    master_addr: str = ""  # --master-addr: the span's first host
    master_port: int = 0  # --master-port
    address: str = ""  # this host's cluster address (VLLM_HOST_IP)

    @property
    def stage_flags(self) -> dict[str, str]:
        """What every stage of a span must run alike (vLLM takes the first host's scheduler figures and each
        host's own model settings): each host plans alone, so hosts of different cards could differ here (the
        dtype on a card without bfloat16, an FP8 KV cache). The first host's memoria compares them."""
        return {
            "dtype": self.dtype or "auto",
            "kv_cache_dtype": self.kv_cache_dtype,
            "context": str(self.context),
            "max_num_seqs": str(self.max_num_seqs),
            "max_num_batched_tokens": str(self.max_num_batched_tokens),
            "block_size": str(self.block_size),
            "tensor_parallel": str(self.tensor_parallel),
            "pipeline_parallel": str(self.pipeline_parallel),
        }

    @property
    def headless(self) -> bool:
        """A rank without vLLM's API server: it serves nothing itself, its first host does."""
        return self.node_rank > 0

    @property
    def sequences_at_full_context(self) -> float:
        return self.concurrency or self.kv_bytes / max(1, self.kv_per_token * self.context)

    @property
    def budget(self) -> int:
        return self.fixed + self.kv_bytes

    @property
    def parks(self) -> bool:
        """Gives its memory back when idle (or to a slot mate), and wakes on the next request."""
        return self.idle != "never"


def held_at_most(workers: Sequence[WorkerPlan], device: int) -> int:
    """The most the workers hold on GPU `device` at once: each one's CUDA context and budget, but of a slot
    only one member awake at a time, its mates asleep (WorkerPlan.asleep)."""
    here = [w for w in workers if device in w.devices]
    total = sum(w.budget // w.tensor_parallel for w in here if not w.slot)
    for slot in {w.slot for w in here if w.slot}:
        members = [w for w in here if w.slot == slot]
        asleep = sum(w.asleep for w in members)
        total += max(w.budget // w.tensor_parallel + asleep - w.asleep for w in members)
    return total


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
    proxy_max_body: int = 32 * MiB
    proxy_allowed_origins: tuple[str, ...] = ()

    def worker(self, name: str) -> WorkerPlan:
        return next(w for w in self.workers if w.name == name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for w, wd in zip(self.workers, d["workers"], strict=True):
            wd["sequences_at_full_context"] = round(w.sequences_at_full_context, 2)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        """The plan back from `to_dict` (state.json, and the plan `up` hands its detached supervisor), so what
        runs is the plan that was shown. TypeError or KeyError for another shape."""
        workers = tuple(
            WorkerPlan(
                **{
                    **_known(WorkerPlan, w),
                    "devices": tuple(w["devices"]),
                    "why": tuple(w.get("why", ())),
                    "layers": tuple(w.get("layers", (0, 0))),
                }
            )
            for w in d["workers"]
        )
        devices = tuple(DevicePlan(**_known(DevicePlan, x)) for x in d["devices"])
        return cls(
            **{
                **_known(cls, d),
                "workers": workers,
                "devices": devices,
                "notes": tuple(d.get("notes", ())),
                "proxy_allowed_origins": tuple(d.get("proxy_allowed_origins", ())),
            }
        )


def _known(cls: type, d: Any) -> dict[str, Any]:
    """The entries of `d` that are fields of the dataclass `cls` (to_dict adds derived figures)."""
    if not isinstance(d, dict):
        raise TypeError(f"{cls.__name__}: expected an object")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}
