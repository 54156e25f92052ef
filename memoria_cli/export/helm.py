"""The plan as a values file for vLLM's production-stack Helm chart (vllm-project/production-stack, helm/).

One `servingEngineSpec.modelSpec[]` entry per worker. The chart builds vLLM's command line itself
(helm/templates/deployment-vllm-multi.yaml): the flags it has keys for go in `vllmConfig`, the rest of the
plan's argv in `vllmConfig.extraArgs`, so the engine the chart starts is the one `up` would start.
"""

from __future__ import annotations

from typing import Any

from memoria_cli.core.kinds import KINDS
from memoria_cli.core.pins import VLLM_IMAGE
from memoria_cli.core.profile import Profile
from memoria_cli.export.workloads import (
    SECRET,
    STARTUP_PERIOD,
    WORKER_KEY,
    WORKER_PORT,
    Workload,
    startup_failures,
)

# memoria's flag -> the chart's vllmConfig key (the template writes each back as that flag)
CHART_FLAGS = {
    "--max-model-len": "maxModelLen",
    "--max-num-seqs": "maxNumSeqs",
    "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--tensor-parallel-size": "tensorParallelSize",
    "--dtype": "dtype",
    "--runner": "runner",
}
INTEGER_KEYS = ("maxModelLen", "maxNumSeqs", "tensorParallelSize")
# flags the chart writes itself from other keys: never in extraArgs twice
OWN_FLAGS = ("serve", "--host", "--port", "--revision")
CHART_DATA = "/data"  # where the chart mounts pvcStorage, and its HF_HOME
PREFIX_FLAGS = {"--enable-prefix-caching": True, "--no-enable-prefix-caching": False}

LIMITS = """\
# What the chart cannot express, and how to keep memoria's API guide working:
# - The chart's router answers with vLLM's own fields: chat's reasoning arrives as `reasoning`, not the
#   guide's `reasoning_content`; `response_format` srt and vtt for transcriptions come back as JSON. memoria's
#   LiteLLM layer does both: run it in front of the chart's router, with the same profile and GPUs,
#     memoria export kubernetes --gpus ... --router http://RELEASE-router-service/v1 -o proxy/
#   (its proxy only), or use `memoria export kubernetes` without the chart.
# - The Hugging Face ids as aliases: each model is served under its memoria name and its aliases
#   (--served-model-name in extraArgs), so clients may use either, as with memoria.
# - Models sharing a GPU need HAMi: requestGPUMem / limitGPUMem are MiB of one card, and the utilization is
#   of that slice (HAMi makes the card look that big inside the container).
# - Keys: the workers' key comes from the Secret named in vllmApiKey; make it before installing.
"""


def production_stack_values(profile: Profile, loads: list[Workload]) -> dict[str, Any]:
    """`loads`: `workloads(plan, profile)`."""
    sup = profile.supervision
    return {
        "servingEngineSpec": {
            "vllmApiKey": {"secretName": SECRET, "secretKey": WORKER_KEY},
            "containerPort": WORKER_PORT,
            "startupProbe": _probe(STARTUP_PERIOD, startup_failures(profile)),
            "livenessProbe": _probe(sup.live_interval, sup.live_misses),
            "readinessProbe": _probe(5, 2),
            "modelSpec": [_model(x) for x in loads],
        }
    }


def _probe(period: float, failures: int) -> dict[str, Any]:
    return {
        "initialDelaySeconds": 0,
        "periodSeconds": max(1, int(period)),
        "failureThreshold": failures,
        "httpGet": {"path": "/health", "port": WORKER_PORT},
    }


def chart_config(x: Workload) -> dict[str, Any]:
    """vllmConfig: the plan's flags the chart has keys for, the rest of its argv verbatim."""
    argv = list(x.argv[2:])  # after `vllm serve`
    model, rest = argv[0], argv[1:]
    assert model == x.entry.model
    config: dict[str, Any] = {}
    extra: list[str] = []
    prefix = KINDS[x.plan.kind].prefix_caching
    i = 0
    while i < len(rest):
        flag = rest[i]
        takes_value = i + 1 < len(rest) and not rest[i + 1].startswith("--")
        if flag == "--served-model-name":  # the aliases too: the chart's router has no alias table
            extra += [flag, x.name, *x.entry.aliases]
            i += 2
        elif flag in PREFIX_FLAGS:
            prefix = PREFIX_FLAGS[flag]
            i += 1
        elif flag in CHART_FLAGS and takes_value:
            key = CHART_FLAGS[flag]
            value: Any = rest[i + 1]
            if key in INTEGER_KEYS:
                value = int(value)
            elif key == "gpuMemoryUtilization":
                value = float(value)
            config[key] = value
            i += 2
        elif flag in OWN_FLAGS:
            i += 2 if takes_value else 1
        else:
            extra.append(flag)
            i += 1
    # The chart writes --no-enable-prefix-caching whenever vllmConfig is given unless told otherwise: say
    # vLLM's own default (or the profile's flag) outright.
    config["enablePrefixCaching"] = prefix
    # the chart mounts a shared-memory volume only when this key is there; vLLM's engine needs one
    config.setdefault("tensorParallelSize", x.plan.tensor_parallel)
    config["extraArgs"] = extra
    return config


def _chart_env(x: Workload) -> dict[str, str]:
    """The worker's environment where the chart mounts the model cache (HF_HOME=/data, its template)."""
    env = {k: v for k, v in x.env.items() if k != "HF_HOME"}
    env["VLLM_CACHE_ROOT"] = f"{CHART_DATA}/vllm"
    return env


def _model(x: Workload) -> dict[str, Any]:
    repository, tag = VLLM_IMAGE.rsplit(":", 1)
    spec: dict[str, Any] = {
        "name": x.k8s_name.removeprefix("memoria-"),
        "repository": repository,
        "tag": tag,
        "modelURL": x.entry.model,
        "replicaCount": 1,
        "requestCPU": 2,
        "requestMemory": f"{x.host_memory_gib}Gi",
        "requestGPU": x.share.gpus,
        "pvcStorage": f"{x.cache_gib}Gi",
        "shmSize": x.shm_size,
        "vllmConfig": chart_config(x),
        "env": [{"name": k, "value": v} for k, v in _chart_env(x).items()],
    }
    if x.entry.revision:
        spec["modelRevision"] = x.entry.revision
    if x.share.slice_mib is not None:
        spec["requestGPUMem"] = str(x.share.slice_mib)
        spec["limitGPUMem"] = str(x.share.slice_mib)
    return spec
