"""The plan as plain Kubernetes manifests: per worker a Deployment and a Service running the exact `vllm serve`
of the plan, the LiteLLM proxy as a Deployment with memoria's config and plug-ins in a ConfigMap, and a
NetworkPolicy that lets only the proxy reach the workers.

Keys come from one Secret the user makes (never from a manifest, never on an argv): the proxy's master key,
and the key the proxy and every worker share. Workers that share a card ask HAMi for a slice of it
(shares.py); the others ask for whole GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from memoria_cli.core.pins import LITELLM_IMAGE, VLLM_IMAGE
from memoria_cli.core.plan import Plan
from memoria_cli.core.profile import Profile
from memoria_cli.core.proxy_config import MASTER_KEY_ENV, render, worker_key_env
from memoria_cli.core.worker_spec import MARKER_ENV, proxy_spec
from memoria_cli.export.workloads import (
    HF_TOKEN,
    MASTER_KEY,
    MODELS_MOUNT,
    SECRET,
    STARTUP_PERIOD,
    WORKER_KEY,
    WORKER_PORT,
    Workload,
    startup_failures,
)

PROXY_NAME = "memoria-proxy"
SERVICE_NAME = "memoria"  # clients use http://memoria:<port>/v1 inside the cluster
CONFIG_MOUNT = "/etc/memoria"
CONFIG_FILE = "config.yaml"
PART_OF = "memoria"
Cache = Literal["pvc", "hostpath"]


@dataclass(frozen=True)
class KubeOptions:
    namespace: str | None = None
    cache: Cache = "pvc"  # a PersistentVolumeClaim per worker, or a folder on the node
    host_path: str = "/var/lib/memoria/models"
    storage_class: str | None = None
    vllm_image: str = VLLM_IMAGE
    proxy_image: str = LITELLM_IMAGE
    router: str | None = None  # an OpenAI-compatible URL that serves every model (the chart's router): proxy only


def manifests(
    plan: Plan, profile: Profile, loads: list[Workload], opts: KubeOptions, plugins: dict[str, str]
) -> list[dict[str, Any]]:
    """Every object, workers first. `loads`: `workloads(plan, profile)`; `plugins`: the files LiteLLM loads from
    beside its config (name -> text)."""
    out: list[dict[str, Any]] = []
    for x in loads if opts.router is None else ():
        if opts.cache == "pvc":
            out.append(_claim(x, opts))
        out += [_worker(x, profile, opts), _service(x.k8s_name, "worker", WORKER_PORT, opts)]
    out += [
        _config_map(plan, profile, loads, opts, plugins),
        _proxy(plan, profile, loads, opts),
        _service(SERVICE_NAME, "proxy", plan.proxy_port, opts, selector=PROXY_NAME),
    ]
    if opts.router is None:
        out.append(_policy(opts))
    return out


def to_yaml(objects: list[dict[str, Any]], header: str) -> str:
    body = "\n---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)
    return header + body


# ------------------------------------------------------------------------------------------------ objects


def _meta(name: str, component: str, opts: KubeOptions, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "labels": _labels(name, component)}
    if opts.namespace:
        m["namespace"] = opts.namespace
    m.update(extra)
    return m


def _labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "memoria",
    }


def _select(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def _secret_env(name: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": SECRET, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _env(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _http_probe(path: str, port: int, period: float, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": max(1, int(period)),
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def _claim(x: Workload, opts: KubeOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{x.cache_gib}Gi"}},
    }
    if opts.storage_class:
        spec["storageClassName"] = opts.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(f"{x.k8s_name}-models", "model-cache", opts),
        "spec": spec,
    }


def _worker(x: Workload, profile: Profile, opts: KubeOptions) -> dict[str, Any]:
    w, sup = x.plan, profile.supervision
    gpu: dict[str, str] = {"nvidia.com/gpu": str(x.share.gpus)}
    if x.share.slice_mib is not None:
        gpu["nvidia.com/gpumem"] = str(x.share.slice_mib)  # HAMi: MiB per GPU; the card looks this big inside
    env = [
        *_env(x.env),
        _secret_env("VLLM_API_KEY", WORKER_KEY),
        _secret_env("HF_TOKEN", HF_TOKEN, optional=True),
    ]
    container = {
        "name": "vllm",
        "image": opts.vllm_image,
        "command": list(x.argv),  # the plan's exact `vllm serve` (the image's entrypoint is replaced)
        "env": env,
        "ports": [{"name": "http", "containerPort": WORKER_PORT}],
        "startupProbe": _http_probe("/health", WORKER_PORT, STARTUP_PERIOD, startup_failures(profile)),
        "livenessProbe": _http_probe("/health", WORKER_PORT, sup.live_interval, sup.live_misses),
        "readinessProbe": _http_probe("/health", WORKER_PORT, 5, 2),
        "resources": {
            "requests": {"cpu": "2", "memory": f"{x.host_memory_gib}Gi", **gpu},
            "limits": gpu,
        },
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT}, {"name": "shm", "mountPath": "/dev/shm"}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if opts.cache == "pvc":
        models: dict[str, Any] = {"persistentVolumeClaim": {"claimName": f"{x.k8s_name}-models"}}
    else:
        models = {"hostPath": {"path": opts.host_path, "type": "DirectoryOrCreate"}}
    shm = {"emptyDir": {"medium": "Memory", "sizeLimit": x.shm_size}}
    notes = {
        "memoria/model": x.entry.model,
        "memoria/context": str(w.context),
        "memoria/kv-cache-bytes": str(w.kv_bytes),
        "memoria/gpu-memory-utilization": f"{w.gmu:.4f}",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(x.k8s_name, "worker", opts, annotations=notes),
        "spec": {
            "replicas": 1,
            # never two on one GPU budget: the old pod goes before the new one starts
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": _select(x.k8s_name)},
            "template": {
                "metadata": {"labels": _labels(x.k8s_name, "worker"), "annotations": notes},
                "spec": {
                    "terminationGracePeriodSeconds": int(sup.grace),
                    "containers": [container],
                    "volumes": [{"name": "models", **models}, {"name": "shm", **shm}],
                },
            },
        },
    }


def _service(name: str, component: str, port: int, opts: KubeOptions, selector: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, component, opts),
        "spec": {
            "selector": _select(selector or name),
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }


def proxy_config(plan: Plan, profile: Profile, loads: list[Workload], router: str | None = None) -> dict[str, Any]:
    """LiteLLM's config, as `up` renders it, with each worker at its Service (or every model at `router`)."""
    pod_plan = replace(plan, workers=tuple(x.plan for x in loads))
    bases = {x.name: router or f"http://{x.k8s_name}:{WORKER_PORT}/v1" for x in loads}
    return render(pod_plan, profile, auth=True, bases=bases)


def _config_map(
    plan: Plan, profile: Profile, loads: list[Workload], opts: KubeOptions, plugins: dict[str, str]
) -> dict[str, Any]:
    config = yaml.safe_dump(proxy_config(plan, profile, loads, opts.router), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(PROXY_NAME, "proxy", opts),
        "data": {CONFIG_FILE: config, **plugins},
    }


def _proxy(plan: Plan, profile: Profile, loads: list[Workload], opts: KubeOptions) -> dict[str, Any]:
    pod_plan = replace(plan, proxy_host="0.0.0.0", workers=tuple(x.plan for x in loads))
    spec = proxy_spec(pod_plan, "python", Path(CONFIG_MOUNT) / CONFIG_FILE, None, "")
    values = {k: v for k, v in spec.env.items() if k != MARKER_ENV}
    values["MEMORIA_LOOPBACK_ONLY"] = "0"  # a key is required: the Host check is for keyless loopback stacks
    env = [
        *_env(values),
        _secret_env(MASTER_KEY_ENV, MASTER_KEY),
        *(_secret_env(worker_key_env(i), WORKER_KEY) for i in range(len(loads))),
    ]
    port = plan.proxy_port
    container = {
        "name": "proxy",
        "image": opts.proxy_image,
        "command": list(spec.argv),
        "env": env,
        "ports": [{"name": "http", "containerPort": port}],
        "startupProbe": _http_probe(spec.live_path, port, 5, 60),
        "livenessProbe": _http_probe(spec.live_path, port, 10, 3),
        "readinessProbe": _http_probe(spec.ready_path, port, 5, 2),
        "resources": {"requests": {"cpu": str(max(1, plan.proxy_workers)), "memory": "1Gi"}},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(PROXY_NAME, "proxy", opts),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _select(PROXY_NAME)},
            "template": {
                "metadata": {"labels": _labels(PROXY_NAME, "proxy")},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": PROXY_NAME}}],
                },
            },
        },
    }


def _policy(opts: KubeOptions) -> dict[str, Any]:
    """Workers take connections from memoria's proxy only (their key is the second lock)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("memoria-workers", "worker", opts),
        "spec": {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/component": "worker", "app.kubernetes.io/part-of": PART_OF}
            },
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": _select(PROXY_NAME)}}],
                    "ports": [{"protocol": "TCP", "port": WORKER_PORT}],
                }
            ],
        },
    }
