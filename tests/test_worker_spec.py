"""Generated vLLM command lines: checked flag by flag, and parsed by the installed vLLM's own parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from memoria_cli.core.inventory import describe
from memoria_cli.core.model_facts import read_facts
from memoria_cli.core.planner import plan
from memoria_cli.core.profile import load_profile, parse_profile
from memoria_cli.core.worker_spec import MARKER_ENV, worker_spec
from memoria_cli.plugins.vllm_hooks import PAUSE_ENV
from tests.oracle import vllm_parse

DEFAULT = load_profile("default")


def specs(profile, inv):
    facts = {m.name: read_facts(m) for m in profile.models}
    p = plan(profile, inv, facts)
    return p, [
        worker_spec(w, profile.model(w.name), "vllm", Path("/tmp/x.log"), "abc", Path("/tmp/c"), Path("/tmp/s"))
        for w in p.workers
    ]


def flag(argv, name):
    return argv[argv.index(name) + 1]


def test_default_profile_on_l4_argv():
    p, ss = specs(DEFAULT, describe("L4"))
    by = {s.name: list(s.argv) for s in ss}
    chat = by["qwen3-4b-thinking-fp8"]
    assert chat[:3] == ["vllm", "serve", "Qwen/Qwen3-4B-Thinking-2507-FP8"]
    assert flag(chat, "--host") == "127.0.0.1"
    assert flag(chat, "--reasoning-parser") == "qwen3"
    assert flag(chat, "--max-model-len") == str(p.worker("qwen3-4b-thinking-fp8").context)
    assert float(flag(chat, "--gpu-memory-utilization")) == p.worker("qwen3-4b-thinking-fp8").gmu
    assert "--trust-remote-code" not in sum(by.values(), [])
    assert flag(by["qwen3-embedding-0.6b"], "--runner") == "pooling"
    ocr = by["hunyuan-ocr"]
    assert "--no-enable-prefix-caching" in ocr and flag(ocr, "--mm-processor-cache-gb") == "0"
    assert flag(ocr, "--revision") == DEFAULT.model("hunyuan-ocr").revision
    for s in ss:
        assert s.env["CUDA_VISIBLE_DEVICES"] == "0"
        assert s.env["VLLM_NO_USAGE_STATS"] == "1" and s.env[MARKER_ENV] == f"abc/{s.name}"
        assert PAUSE_ENV not in s.env and "PYTHONPATH" not in s.env  # GPU hosts keep vLLM's spinning


def test_tensor_parallel_and_cpu_flags(tmp_path):
    big = parse_profile(
        {
            "models": [
                {
                    "name": "big",
                    "model": "x/big",
                    "kind": "chat",
                    "trust_remote_code": True,
                    "facts": {"weights": "60GiB", "layers": 64, "kv_heads": 8, "head_dim": 128, "max_context": 32768},
                }
            ]
        }
    )
    _, [s] = specs(big, describe("2x48GiB"))
    assert flag(list(s.argv), "--tensor-parallel-size") == "2" and s.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "--trust-remote-code" in s.argv  # only because the profile asks
    from memoria_cli.core.inventory import Cpu, Inventory

    _, [c] = specs(
        big.model_copy(
            update={
                "models": [
                    big.models[0].model_copy(update={"facts": big.models[0].facts.model_copy(update={"weights": 1000})})
                ]
            }
        ),
        Inventory(cpu=Cpu(total=24 << 30, available=20 << 30, cores=2)),
    )
    assert "--gpu-memory-utilization" not in c.argv and "--enforce-eager" in c.argv
    assert c.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1" and "VLLM_CPU_KVCACHE_SPACE" in c.remove_env
    assert c.env["PYTHONPATH"] == "/tmp/s" and int(c.env[PAUSE_ENV]) > 0  # vllm_hooks.py: pause, not spin


@pytest.mark.medium
def test_every_generated_argv_passes_vllms_own_parser():
    argvs, expect = [], []
    for gpus in ("L4", "H100", "2xA100", "cpu"):
        inv = describe(gpus) if gpus != "cpu" else None
        if inv is None:
            from memoria_cli.core.inventory import Cpu, Inventory

            inv = Inventory(cpu=Cpu(total=64 << 30, available=60 << 30, cores=8))
        p, ss = specs(DEFAULT, inv)
        for s, w in zip(ss, p.workers, strict=True):
            argvs.append(list(s.argv))
            expect.append(w)
    bad = ["vllm", "serve", "x/y", "--max-model-len", "10", "--no-such-flag", "1"]
    results = vllm_parse([*argvs, bad])
    assert not results[-1]["ok"]
    for argv, w, r in zip(argvs, expect, results, strict=False):
        assert r["ok"], (argv, r)
        a = r["args"]
        assert a["model_tag"] == w.model and a["port"] == w.port and a["host"] == "127.0.0.1"
        assert a["max_model_len"] == w.context and a["max_num_seqs"] == w.max_num_seqs
        assert a["max_num_batched_tokens"] == w.max_num_batched_tokens
        if w.gmu is not None:  # GPU: a budget vLLM fills itself, never a fixed KV size on top of an estimate
            assert a["kv_cache_memory_bytes"] is None and a["block_size"] == w.block_size == 16
            assert a["gpu_memory_utilization"] == pytest.approx(w.gmu, abs=1e-4)
        else:
            assert a["kv_cache_memory_bytes"] == w.kv_bytes and a["block_size"] == w.block_size == 128
        if w.kind == "embedding":
            assert a["runner"] == "pooling"
        if w.kind == "chat":
            assert a["reasoning_parser"] == "qwen3"
        if w.name == "hunyuan-ocr":
            assert a["enable_prefix_caching"] is False and a["mm_processor_cache_gb"] == 0
