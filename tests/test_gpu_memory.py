"""The GPU memory model against published vLLM start-up logs, and vLLM's start-up report parsed back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from memoria_cli.core.gpu_memory import (
    CUDA_CONTEXT,
    KvLayout,
    capture_sizes,
    kv_layout,
    worker_memory,
)
from memoria_cli.core.model_facts import Facts, facts_from_config
from memoria_cli.core.units import GiB
from memoria_cli.run.runtimes import Runtimes
from memoria_cli.run.vllm_report import parse_startup, warnings
from tests.helpers import DEFAULT_RUNTIMES, worker_plan

# Qwen3-0.6B's config.json (the published H100 run below served it).
QWEN3_06B = facts_from_config(
    {
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 40960,
        "vocab_size": 151936,
        "torch_dtype": "bfloat16",
    },
    weights=int(1.12 * GiB),
    source="test",
)
LLAMA3_8B = facts_from_config(
    {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "vocab_size": 128256,
        "torch_dtype": "bfloat16",
    },
    weights=int(14.96 * GiB),
    source="test",
)


def published_kv(total_gib: float, util: float, weights: int, activation: int, non_torch: int) -> float:
    """The KV cache of those logs (vLLM <= 0.20 did not take CUDA graphs out): util x total minus the rest."""
    return (util * total_gib * GiB - weights - activation - non_torch) / GiB


def test_calibrated_on_qwen3_0_6b_on_an_h100():
    """Published: H100 79.18 GiB, util 0.9, vLLM 0.11 defaults on that card (max_num_seqs 1024,
    max_num_batched_tokens 8192): weights 1.12 GiB, activation peak 5.56 GiB, non-torch 0.13 GiB, CUDA graphs
    0.10 GiB, KV cache 64.45 GiB. memoria within 25 % on activation and 10 % on the KV cache."""
    m = worker_memory(
        QWEN3_06B,
        "chat",
        QWEN3_06B.weights,
        act_bytes=2,
        tp=1,
        max_num_seqs=1024,
        max_num_batched_tokens=8192,
        eager=False,
    )
    assert m.activation / GiB == pytest.approx(5.56, rel=0.25)
    assert m.graphs / GiB == pytest.approx(0.10, rel=0.5)
    assert published_kv(79.18, 0.9, m.weights, m.activation, m.non_torch) == pytest.approx(64.45, rel=0.10)
    # and the activation follows max_num_seqs (the sampler), not the context: a pinned 32 costs 30x less
    small = worker_memory(
        QWEN3_06B,
        "chat",
        QWEN3_06B.weights,
        act_bytes=2,
        tp=1,
        max_num_seqs=32,
        max_num_batched_tokens=2048,
        eager=False,
    )
    assert small.activation < m.activation / 20


def test_calibrated_on_llama3_8b_on_an_h100():
    """vLLM pull request 10511's log: Llama-3-8B, H100 79.22 GiB, util 0.9, 256 sequences over 8192 tokens:
    activation peak 1.26 GiB, KV cache 53.29 GiB (its non-torch 1.79 GiB held more than memoria counts here)."""
    m = worker_memory(
        LLAMA3_8B,
        "chat",
        LLAMA3_8B.weights,
        act_bytes=2,
        tp=1,
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        eager=False,
    )
    assert m.activation / GiB == pytest.approx(1.26, rel=0.25)
    assert published_kv(79.22, 0.9, m.weights, m.activation, m.non_torch) == pytest.approx(53.29, rel=0.10)


def test_kv_layout_holds_the_null_block_back():
    layout = kv_layout(QWEN3_06B, kv_bytes_per_elem=2, tp=1, max_num_batched_tokens=2048)
    per_block = 16 * 8 * 128 * 2 * 2 * 28
    assert layout.bytes_per_block == per_block
    kv = 100 * per_block
    assert layout.max_context(kv) == 99 * 16  # the 100th block is the pool's null block
    assert layout.kv_bytes_for(99 * 16) == kv
    assert layout.kv_tokens(kv, 99 * 16) == int(100 / 99 * 99 * 16)


def test_whisper_requests_also_hold_the_encoder_budget_in_cross_attention():
    whisper = Facts(
        weights=0,
        layers=4,
        kv_heads=20,
        head_dim=64,
        max_context=448,
        dtype_bytes=2,
        quantization=None,
        source="test",
        cross_tokens=1500,
    )
    layout = kv_layout(whisper, 2, 1, max_num_batched_tokens=1792)
    assert layout == KvLayout(page=16 * 20 * 64 * 2 * 2, layers=4, cross_tokens=1792)
    assert layout.blocks_per_request(448) == 28 + 112
    assert layout.kv_bytes_for(448) / 1e6 == pytest.approx(46.2, abs=0.1)  # the "about 46 MB"


def test_capture_sizes_follow_vllms_default_list():
    assert capture_sizes(1024, 8192) == [1, 2, 4, *range(8, 256, 8), *range(256, 513, 16)]
    assert capture_sizes(32, 2048) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]


# --------------------------------------------------------------------------- what vLLM reports at start

GPU_LOG = """\
(EngineCore pid=4242) INFO 12-01 10:00:01 [gpu_model_runner.py:5150] Model loading took 4.11 GiB memory and 9.5 seconds
(EngineCore pid=4242) INFO 12-01 10:00:09 [gpu_model_runner.py:6470] Estimated CUDA graph memory: 0.03 GiB total
(EngineCore pid=4242) INFO 12-01 10:00:09 [gpu_worker.py:760] Available KV cache memory: 5.87 GiB
(EngineCore pid=4242) INFO 12-01 10:00:09 [kv_cache_utils.py:2328] GPU KV cache size: 42,608 tokens, \
Maximum concurrency for 32,768 tokens per request: 1.30x
(EngineCore pid=4242) INFO 12-01 10:00:20 [gpu_model_runner.py:6582] Graph capturing finished in 6 secs, took 0.04 GiB
"""
CPU_LOG = """\
(EngineCore pid=77) INFO 12-01 10:00:01 [cpu_worker.py:230] Explicitly set (0.18/14.84) GiB for KV cache on node 0.
(EngineCore pid=77) INFO 12-01 10:00:01 [kv_cache_utils.py:2328] CPU KV cache size: 5,888 tokens, \
Maximum concurrency for 2,048 tokens per request: 2.88x
"""


def test_startup_lines_are_read_on_both_engines():
    gpu = parse_startup(GPU_LOG.splitlines())
    assert gpu.to_dict() == {
        "weights": int(4.11 * GiB),
        "kv_memory": int(5.87 * GiB),
        "kv_tokens": 42608,
        "max_concurrency": 1.3,
        "context": 32768,
        "graphs": int(0.04 * GiB),
    }
    cpu = parse_startup(CPU_LOG.splitlines())
    assert cpu.to_dict() == {"kv_memory": int(0.18 * GiB), "kv_tokens": 5888, "max_concurrency": 2.88, "context": 2048}


def test_the_lines_read_are_still_the_installed_vllms():
    """If vLLM rewords a line, `status` would go blank (or a refusal unexplained) without a word: the format
    strings memoria reads (vllm_report.py, supervisor.py NON_RETRYABLE) must be there."""
    py = Runtimes(DEFAULT_RUNTIMES).python_of(Runtimes(DEFAULT_RUNTIMES).vllm)
    site = next((py.parent.parent / "lib").glob("python3*/site-packages/vllm"), None)
    if site is None:
        pytest.fail("vLLM runtime missing: run `memoria setup` (the test script does)")
    sources = {
        rel: (Path(site) / rel).read_text()
        for rel in (
            "v1/worker/gpu_model_runner.py",
            "v1/worker/gpu_worker.py",
            "v1/worker/cpu_worker.py",
            "v1/core/kv_cache_utils.py",
            "v1/worker/utils.py",
            "v1/metrics/loggers.py",
            "entrypoints/serve/instrumentator/basic.py",
        )
    }
    wanted = {
        "v1/worker/gpu_model_runner.py": [
            "Model loading took %s GiB memory",
            "Estimated CUDA graph memory: %.2f GiB total",
            "Graph capturing finished in %.0f secs, took %.2f GiB",
        ],
        "v1/worker/gpu_worker.py": ["Available KV cache memory: %s GiB"],
        "v1/worker/cpu_worker.py": ['f"Explicitly set ({format_gib(kv_cache_size)}/"'],
        "v1/core/kv_cache_utils.py": [
            '"%s KV cache size: %s tokens, "',
            '"Maximum concurrency for %s tokens per request: %.2fx"',
            "To serve at least one request with the model's max seq len",
            "the estimated maximum model length is {estimated_max_len}",
        ],
        "v1/worker/utils.py": ["is less than desired GPU memory utilization"],
        # the supervisor's progress watch (probes.py PROGRESS_SERIES, /load)
        "v1/metrics/loggers.py": [
            'name="vllm:prompt_tokens"',
            'name="vllm:generation_tokens"',
            'name="vllm:request_success"',
            'name="vllm:kv_cache_usage_perc"',
        ],
        "entrypoints/serve/instrumentator/basic.py": ['@router.get("/load")', "server_load_metrics"],
    }
    for rel, needles in wanted.items():
        flat = re.sub(r'"\s*\n\s*"', "", sources[rel])  # join Python's implicit string concatenations
        for needle in needles:
            assert needle.replace('"', "") in flat.replace('"', ""), (rel, needle)


def test_status_warns_when_a_worker_takes_more_than_its_budget():
    total = 24 * GiB
    w = worker_plan(gmu=0.5, devices=(0,), cuda_context=CUDA_CONTEXT, kv_bytes=6 * GiB, kv_tokens=42000)
    budget = CUDA_CONTEXT + 12 * GiB
    ok = parse_startup(GPU_LOG.replace("5.87", "6.00").replace("42,608", "43,000").splitlines())
    assert warnings(w, ok, budget, {0: total}) == []
    over = warnings(w, ok, budget + GiB, {0: total})
    assert over == [
        "chat holds 13.5 GiB of GPU memory, over its budget of 12.5 GiB: it takes memory planned for its neighbours"
    ]
    assert warnings(w, parse_startup(GPU_LOG.splitlines()), budget, {0: total}) == []  # 5.87 of 6: within 10 %
    short = warnings(w, parse_startup(GPU_LOG.replace("5.87", "4.80").splitlines()), budget, {0: total})
    assert short == [
        "chat: vLLM found 4.8 GiB for its KV cache, 6.0 GiB planned: its activation or graphs took more than estimated"
    ]
