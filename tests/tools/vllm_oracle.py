"""vLLM's own memory code as the judge of memoria's GPU plans (run with the vLLM runtime's python).

stdin: JSON {"workers": [...]}: per planned GPU worker its model shape (a config.json), the flags memoria
gives it, its utilization budget, the free memory it will find at its start, and the KV bytes memoria expects
vLLM to find inside that budget. For each, this runs, from the installed vLLM:
- `EngineArgs.create_engine_config`: vLLM's own validation of the flags (context vs batched tokens, ...);
- `request_memory`: the free-memory check at start-up (vllm/v1/worker/utils.py);
- `resolve_kv_cache_layout`, `reserve_mm_ipc_gpu_memory` and `get_kv_cache_configs`: the KV cache admission
  (null block held back) over the per-layer KV specs a GPU worker registers (full attention; Whisper's
  cross-attention too);
- `get_kv_cache_capacity` and vLLM's own estimate of the longest context that KV memory admits;
- `Fp8Config.get_min_capability`: whether vLLM runs an FP8 checkpoint on the card at all;
- `Worker.determine_available_memory` itself, on a simulated GPU whose allocator and free memory move as the
  worker's would (its CUDA context, weights, profile-run peak, non-torch memory, CUDA graphs), with memoria's
  estimates as the measurements and again with every measurement 1.5 times larger: the KV cache vLLM then
  sizes must still admit the context, and the worker must hold no more than its CUDA context plus budget.
stdout: JSON list, per worker {"ok": bool, "error": ..., "requested", "num_blocks", "kv_tokens",
"concurrency", "vllm_max_len", "simulated": {scale: {"kv", "held", "admitted"}}}, and a last line
{"vllm": version}.
"""

import contextlib
import gc
import io
import json
import logging
import os
import sys
import tempfile
import types

logging.disable(logging.WARNING)
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

import torch  # noqa: E402
from vllm import __version__  # noqa: E402
from vllm.config.compilation import CUDAGraphMode  # noqa: E402
from vllm.distributed.utils import get_pp_indices  # noqa: E402
from vllm.engine.arg_utils import EngineArgs  # noqa: E402
from vllm.model_executor.layers.quantization.fp8 import Fp8Config  # noqa: E402
from vllm.multimodal.gpu_ipc_memory import reserve_mm_ipc_gpu_memory  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402
from vllm.usage.usage_lib import UsageContext  # noqa: E402
from vllm.utils.mem_utils import MemorySnapshot  # noqa: E402
from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend  # noqa: E402
from vllm.v1.attention.backends.utils import (  # noqa: E402
    get_supported_kv_cache_layouts,
    resolve_kv_cache_layout,
)
from vllm.v1.core.kv_cache_utils import (  # noqa: E402
    _estimate_max_model_len_from_groups,
    _pool_bytes_per_block,
    get_kv_cache_capacity,
    get_kv_cache_configs,
    get_kv_cache_groups,
)
from vllm.v1.kv_cache_interface import CrossAttentionSpec, FullAttentionSpec  # noqa: E402
from vllm.v1.worker.gpu_worker import Worker  # noqa: E402
from vllm.v1.worker.utils import request_memory  # noqa: E402

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "fp8": torch.float8_e4m3fn}
_folders: dict[str, str] = {}
_root = tempfile.TemporaryDirectory(prefix="memoria-oracle-")  # removed when this process ends


def folder_for(config: dict) -> str:
    key = json.dumps(config, sort_keys=True)
    if key not in _folders:
        d = tempfile.mkdtemp(dir=_root.name)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f)
        _folders[key] = d
    return _folders[key]


def stage(w: dict, rank: int | None = None) -> tuple[int, int]:
    """The decoder layers pipeline stage `rank` holds, by vLLM's own split (a worker's own stage by default)."""
    return get_pp_indices(w["layers"], w.get("node_rank", 0) if rank is None else rank, w.get("pp", 1))


def kv_specs(w: dict, rank: int | None = None) -> dict:
    """The per-layer specs a CUDA worker registers (Attention.get_kv_cache_spec) for this shape; a pipeline
    stage registers its own layers only (the others are PPMissingLayer)."""
    dtype = DTYPES["fp8" if w["kv_cache_dtype"] == "fp8" else w["dtype"]]
    heads = max(1, w["kv_heads"] // w["tp"])
    common = {"block_size": w["block_size"], "num_kv_heads": heads, "head_size": w["head_dim"], "dtype": dtype}
    specs = {}
    for i in range(*stage(w, rank)):
        if w["cross"]:
            specs[f"model.decoder.layers.{i}.self_attn.attn"] = FullAttentionSpec(**common)
            specs[f"model.decoder.layers.{i}.encoder_attn.attn"] = CrossAttentionSpec(**common)
        else:
            specs[f"model.layers.{i}.self_attn.attn"] = FullAttentionSpec(**common)
    return specs


class FakeGpu:
    """torch.accelerator's memory figures for one simulated device, moved as a worker allocates."""

    def __init__(self, total: int, free: int) -> None:
        self.total, self.free = total, free
        self.reserved = self.allocated = self.peak = 0

    def torch_alloc(self, n: int) -> None:
        self.allocated += n
        self.peak = max(self.peak, self.allocated)
        grow = max(0, self.allocated - self.reserved)
        self.reserved += grow
        self.free -= grow

    def torch_free(self, n: int) -> None:
        self.allocated -= n

    def other_alloc(self, n: int) -> None:  # CUDA context, cuBLAS workspaces, graphs: not torch's allocator
        self.free -= n

    @contextlib.contextmanager
    def installed(self):
        acc = torch.accelerator
        saved = {
            k: getattr(acc, k)
            for k in ("get_memory_info", "memory_stats", "memory_reserved", "empty_cache", "reset_peak_memory_stats")
        }
        platform_saved = (type(current_platform).is_cuda_alike, type(current_platform).is_integrated_gpu)

        def empty_cache(*_a):
            self.free += self.reserved - self.allocated
            self.reserved = self.allocated

        def reset_peak(*_a):
            self.peak = self.allocated

        acc.get_memory_info = lambda *_a: (self.free, self.total)
        acc.memory_stats = lambda *_a: {
            "allocated_bytes.all.peak": self.peak,
            "allocated_bytes.all.current": self.allocated,
        }
        acc.memory_reserved = lambda *_a: self.reserved
        acc.empty_cache, acc.reset_peak_memory_stats = empty_cache, reset_peak
        type(current_platform).is_cuda_alike = classmethod(lambda cls: True)
        type(current_platform).is_integrated_gpu = classmethod(lambda cls, device_id=0: False)
        collect, gc.collect = gc.collect, lambda *_a: 0  # a full collection per snapshot: minutes over the matrix
        try:
            yield
        finally:
            gc.collect = collect
            for k, v in saved.items():
                setattr(acc, k, v)
            type(current_platform).is_cuda_alike, type(current_platform).is_integrated_gpu = platform_saved


def simulate(w: dict, cfg, scale: float) -> dict:
    """One worker's start on a GPU where it finds `free_at_start` plus its own CUDA context, with every
    figure vLLM measures `scale` times memoria's estimate; vLLM's own determine_available_memory sizes the KV."""
    est = w["estimate"]
    gpu = FakeGpu(w["total"], w["free_at_start"] + est["cuda_context"])
    before = gpu.free
    weights, act, non_torch, graphs = (
        int(est[k] * (1 if k == "weights" else scale)) for k in ("weights", "activation", "non_torch", "graphs")
    )
    cfg.compilation_config.cudagraph_mode = CUDAGraphMode.FULL_AND_PIECEWISE  # what CUDA runs (CPU: none)
    with gpu.installed():
        gpu.other_alloc(est["cuda_context"])
        init = MemorySnapshot(device="cuda:0")
        requested = request_memory(init, cfg.cache_config)
        gpu.torch_alloc(weights)

        def profile_run(randomize_inputs=False):
            gpu.torch_alloc(act)
            gpu.other_alloc(non_torch)
            gpu.torch_free(act)

        runner = types.SimpleNamespace(
            model_memory_usage=weights, profile_run=profile_run, profile_cudagraph_memory=lambda: graphs
        )
        fake = types.SimpleNamespace(
            cache_config=cfg.cache_config,
            init_snapshot=init,
            requested_memory=requested,
            model_runner=runner,
            vllm_config=cfg,
            model_config=cfg.model_config,
            parallel_config=cfg.parallel_config,
            randomize_dummy_inputs=False,
            _scoped_allocator_max_split=lambda **_k: contextlib.nullcontext(),
        )
        kv = Worker.determine_available_memory(fake)
        gpu.torch_alloc(kv)  # the KV cache tensors
        gpu.other_alloc(graphs)  # the graphs captured after it
    try:
        configs = get_kv_cache_configs(cfg, [kv_specs(w)] * w["tp"], [kv] * w["tp"])
        admitted = configs[0].num_blocks > 0
    except ValueError:
        admitted = False
    return {"kv": kv, "held": before - gpu.free, "admitted": admitted, "requested": requested}


@contextlib.contextmanager
def cuda_sleep_mode():
    """This runtime is vLLM's CPU build: its platform says sleep mode and the cuMem allocator are not
    available, where a CUDA platform says they are. For a worker with --enable-sleep-mode, the config's own
    checks run as on CUDA (ModelConfig turns the cuMem allocator on there)."""
    cls = type(current_platform)
    saved = (cls.is_sleep_mode_available, cls.is_cumem_allocator_available, cls.is_cuda_alike)
    cls.is_sleep_mode_available = classmethod(lambda c: True)
    cls.is_cumem_allocator_available = classmethod(lambda c: True)
    cls.is_cuda_alike = classmethod(lambda c: True)
    try:
        yield
    finally:
        cls.is_sleep_mode_available, cls.is_cumem_allocator_available, cls.is_cuda_alike = saved


def span_args(w: dict) -> dict:
    """A span's stage: vLLM's multi-node settings, as its command line gives them (core/worker_spec.py)."""
    if w.get("pp", 1) == 1:
        return {}
    return {
        "pipeline_parallel_size": w["pp"],
        "tensor_parallel_size": w["tp"],
        "nnodes": w["pp"],
        "node_rank": w["node_rank"],
        "master_addr": "127.0.0.1",
        "distributed_executor_backend": "mp",
    }


def group(w: dict, cfg) -> dict:
    """A span as its first host's engine core sizes it: every rank's specs and KV memory (from each host's own
    plan) through get_kv_cache_configs at once; each rank gets the smallest rank's blocks."""
    ranks = w["group"]
    specs = [kv_specs(w, r) for r, _ in enumerate(ranks) for _ in range(w["tp"])]
    avail = [kv for kv in ranks for _ in range(w["tp"])]
    configs = get_kv_cache_configs(cfg, specs, avail)
    tokens, concurrency = get_kv_cache_capacity(cfg, configs[0])
    return {"num_blocks": configs[0].num_blocks, "kv_tokens": tokens, "concurrency": concurrency}


def judge(w: dict) -> dict:
    cap = w["capability"][0] * 10 + w["capability"][1]
    if w["quantization"] == "fp8" and cap < Fp8Config.get_min_capability():
        return {"ok": False, "error": f"vLLM runs FP8 from compute capability {Fp8Config.get_min_capability()}"}
    args = EngineArgs(
        model=folder_for(w["config"]),
        skip_tokenizer_init=True,
        max_model_len=w["max_model_len"],
        max_num_seqs=w["max_num_seqs"],
        max_num_batched_tokens=w["max_num_batched_tokens"],
        block_size=w["block_size"],
        gpu_memory_utilization=w["gmu"],
        enable_sleep_mode=w.get("sleep_mode", False),
        **({"runner": "pooling"} if w["kind"] == "embedding" else {}),
        **span_args(w),
    )
    sleeps = w.get("sleep_mode", False)
    with contextlib.redirect_stdout(io.StringIO()), cuda_sleep_mode() if sleeps else contextlib.nullcontext():
        cfg = args.create_engine_config(UsageContext.OPENAI_API_SERVER)
        graphs_released = cfg.use_cumem_cudagraph_pool
    snapshot = MemorySnapshot(
        total_memory=w["total"], free_memory=w["free_at_start"], auto_measure=False, device="cuda:0"
    )
    requested = request_memory(snapshot, cfg.cache_config)
    available = reserve_mm_ipc_gpu_memory(w["kv_bytes"], cfg.model_config.multimodal_config)
    specs = kv_specs(w)
    # The engine core resolves the layout before sizing the cache (v1/engine/core.py); the CUDA workers of
    # these models run FlashAttention (Triton attention on Turing declares the same layouts).
    layouts = [[x.name for x in get_supported_kv_cache_layouts([FlashAttentionBackend])]] * w["tp"]
    cfg.cache_config.kv_cache_layout = resolve_kv_cache_layout(cfg, layouts, list(specs.values())).name
    configs = get_kv_cache_configs(cfg, [specs] * w["tp"], [available] * w["tp"])
    tokens, concurrency = get_kv_cache_capacity(cfg, configs[0])
    groups = get_kv_cache_groups(cfg, dict(specs))
    usable = available - _pool_bytes_per_block(cfg, groups)
    cfg.model_config.max_model_len = w["model_max_len"]  # the estimate searches up to the model's own limit
    longest = _estimate_max_model_len_from_groups(cfg, groups, usable)
    cfg.model_config.max_model_len = w["max_model_len"]
    simulated = {str(scale): simulate(w, cfg, scale) for scale in (1.0, 1.5)}
    return {
        "ok": True,
        "requested": requested,
        "num_blocks": configs[0].num_blocks,
        "kv_tokens": tokens,
        "concurrency": concurrency,
        # asleep, a worker's CUDA graphs stay on the GPU unless they go to the pool that sleep releases
        "sleep_mode": cfg.model_config.enable_sleep_mode,
        "graphs_released_asleep": graphs_released,
        "vllm_max_len": longest,
        "simulated": simulated,
        "prefix_caching": cfg.cache_config.enable_prefix_caching,  # vLLM's default for the model (no flag)
        "stage": list(stage(w)),
        "world_size": cfg.parallel_config.world_size,
        "group": group(w, cfg) if w.get("group") else None,
    }


out = []
for w in json.load(sys.stdin)["workers"]:
    try:
        out.append(judge(w))
    except (ValueError, AssertionError) as exc:  # vLLM's refusals are ValueErrors
        out.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
print(json.dumps(out))
print(json.dumps({"vllm": __version__}))
