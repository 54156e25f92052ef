"""Each planned worker as a container: the exact `vllm serve` argv and environment `up` would give it (the same
worker_spec), moved from a host's loopback to a pod. Shared by the Kubernetes manifests and the Helm values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from memoria_cli.core.errors import InputError, PlanError
from memoria_cli.core.plan import Plan, WorkerPlan
from memoria_cli.core.profile import ModelEntry, Profile
from memoria_cli.core.units import GiB
from memoria_cli.core.worker_spec import MARKER_ENV, worker_spec
from memoria_cli.export.shares import GpuShare, gpu_shares

WORKER_PORT = 8000  # vLLM's own default port: what its image, the chart and its docs assume
MODELS_MOUNT = "/models"  # the Hugging Face cache and vLLM's compile cache live here
SECRET = "memoria-keys"  # the keys, made by the user (never by memoria, never in a manifest)
MASTER_KEY = "master-key"
WORKER_KEY = "worker-key"
HF_TOKEN = "hf-token"  # optional: gated models
# Not measured by the plan (it sizes GPU memory): a GPU worker's process holds ~3-4 GiB of host memory
# (Python, torch, the CUDA libraries) and stages up to one GPU's share of the weights through it while loading.
HOST_BASE = 4 * GiB
STARTUP_PERIOD = 10  # seconds between start-up probes


@dataclass(frozen=True)
class Workload:
    """One worker as a pod's container."""

    k8s_name: str  # a DNS-1035 label: Deployment, Service and Helm model names
    plan: WorkerPlan  # re-expressed for the pod: its port, and the utilization of its GPU share
    entry: ModelEntry
    share: GpuShare
    argv: tuple[str, ...]
    env: dict[str, str]

    @property
    def name(self) -> str:
        """The worker's name in the profile (its served name)."""
        return self.plan.name

    @property
    def host_memory_gib(self) -> int:
        return math.ceil((HOST_BASE + self.plan.weights / self.plan.tensor_parallel) / GiB)

    @property
    def cache_gib(self) -> int:
        """The model cache's size: the weights, a quarter more for what the hub keeps beside them, 2 GiB."""
        return math.ceil(self.plan.weights * 1.25 / GiB) + 2

    @property
    def shm_size(self) -> str:
        """/dev/shm: vLLM's engine and its tensor-parallel ranks talk through it (a container's is 64 MiB)."""
        return "8Gi" if self.plan.tensor_parallel > 1 else "2Gi"


def k8s_name(name: str) -> str:
    """A DNS-1035 label (Service names): lower case, digits and '-', a letter first, at most 63 characters."""
    s = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not s or not s[0].isalpha():
        s = f"m-{s}"
    return s[:63].rstrip("-")


def workloads(plan: Plan, profile: Profile) -> list[Workload]:
    """Every worker of a GPU plan, in start order. A CPU plan has no cluster form here: refused."""
    if plan.engine != "cuda":
        raise no_gpus()
    shares = gpu_shares(plan)
    out: list[Workload] = []
    seen: dict[str, str] = {}
    for w in plan.workers:
        name = k8s_name(f"memoria-{w.name}")
        if name in seen:
            raise PlanError(
                f"workers {seen[name]!r} and {w.name!r} get the same Kubernetes name {name!r}",
                "rename one of them in the profile",
            )
        seen[name] = w.name
        entry = profile.model(w.name)
        pod = replace(w, port=WORKER_PORT, gmu=shares[w.name].gmu)
        spec = worker_spec(
            pod, entry, "vllm", None, "", Path(MODELS_MOUNT), Path(MODELS_MOUNT), host="0.0.0.0"
        )  # the pod's own address: a Service reaches it there; its key and a NetworkPolicy guard it
        env = {k: v for k, v in spec.env.items() if k not in (MARKER_ENV, "CUDA_VISIBLE_DEVICES")}
        env["VLLM_CACHE_ROOT"] = f"{MODELS_MOUNT}/vllm"
        env["HF_HOME"] = f"{MODELS_MOUNT}/hf"
        out.append(Workload(name, pod, entry, shares[w.name], spec.argv, env))
    return out


def summary(loads: list[Workload]) -> str:
    """The plan in comment lines, for the file's header: what each worker gets."""
    lines = ["# The plan, per worker (what vLLM should log at its start):"]
    for x in loads:
        w, share = x.plan, x.share
        gpu = f"{share.gpus} GPU" + ("s" if share.gpus > 1 else "")
        if share.slice_mib is not None:
            gpu += f", a HAMi slice of {share.slice_mib} MiB each"
        lines.append(
            f"#   {x.name}: {gpu}, --gpu-memory-utilization {share.gmu:.4f}, context {w.context}, "
            f"KV cache {w.kv_bytes / GiB:.2f} GiB ({w.kv_tokens} tokens)"
        )
    return "\n".join(lines) + "\n"


def no_gpus() -> InputError:
    return InputError(
        "there are no GPUs to plan for (the CPU engine), and the export targets GPU nodes",
        "describe the cluster's GPUs: --gpus L4 (or 2xH100, 24GiB@8.9, ...)",
    )


def startup_failures(profile: Profile) -> int:
    """The start-up probe's failureThreshold: the profile's start-up budget (the supervisor's too)."""
    return math.ceil(profile.startup_timeout / STARTUP_PERIOD)
