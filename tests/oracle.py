"""Plans as vLLM's own memory code sees them: rows for tests/tools/vllm_oracle.py, and running it.

Shared by tests/test_gpu_plan_oracle.py and bench/gpu_plans.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from memoria_cli.core.gpu_memory import BLOCK_SIZE, CUDA_CONTEXT
from memoria_cli.core.home import Home
from memoria_cli.core.inventory import Inventory
from memoria_cli.core.model_facts import Facts
from memoria_cli.core.plan import Plan, held_at_most
from memoria_cli.run.runtimes import Runtimes

ORACLE = Path(__file__).resolve().parent / "tools" / "vllm_oracle.py"
PARSER = ORACLE.with_name("vllm_parse.py")


def hf_config(f: Facts, kind: str) -> dict:
    """A config.json with the model's shape, for vLLM's config code (no weights are loaded). The vision
    model's decoder is given as a Qwen3 decoder of the same shape: its KV specs are what the check needs."""
    if kind == "transcription":
        return {
            "architectures": ["WhisperForConditionalGeneration"],
            "model_type": "whisper",
            "d_model": f.hidden,
            "decoder_attention_heads": f.kv_heads,
            "encoder_attention_heads": f.kv_heads,
            "decoder_layers": f.layers,
            "encoder_layers": 32,
            "decoder_ffn_dim": f.intermediate,
            "encoder_ffn_dim": f.encoder_ffn,
            "max_source_positions": f.cross_tokens,
            "max_target_positions": f.max_context,
            "num_mel_bins": 128,
            "vocab_size": f.vocab,
            "torch_dtype": "float16",
            "decoder_start_token_id": 50258,
            "eos_token_id": 50257,
            "pad_token_id": 50257,
            "bos_token_id": 50257,
        }
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": f.hidden,
        "intermediate_size": f.intermediate,
        "num_hidden_layers": f.layers,
        "num_attention_heads": f.heads,
        "num_key_value_heads": f.kv_heads,
        "head_dim": f.head_dim,
        "max_position_embeddings": f.max_context,
        "vocab_size": f.vocab,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
    }


def oracle_inputs(p: Plan, inv: Inventory, facts: dict[str, Facts]) -> list[dict]:
    """Each worker as vLLM will see it when it starts with every other worker up (a restart, or a wake from
    stopped, can come at any time): the free memory at its start is the card's free memory less the most the
    others hold (their CUDA contexts and budgets; of a slot one member awake: plan.held_at_most), and less
    what its own slot mates hold asleep."""
    rows = []
    for w in p.workers:
        f = facts[w.name]
        g = inv.gpus[w.devices[0]]
        mates = [o for o in p.workers if o is not w and w.slot and o.slot == w.slot]
        others = [o for o in p.workers if o is not w and o not in mates]
        held = max(held_at_most(others, d) for d in w.devices) + sum(o.asleep for o in mates)
        free = g.free - held - CUDA_CONTEXT
        rows.append(
            {
                "name": w.name,
                "kind": w.kind,
                "config": hf_config(f, w.kind),
                "max_model_len": w.context,
                "model_max_len": f.max_context,
                "max_num_seqs": w.max_num_seqs,
                "max_num_batched_tokens": w.max_num_batched_tokens,
                "block_size": BLOCK_SIZE,
                "dtype": w.dtype or "bfloat16",
                "kv_cache_dtype": w.kv_cache_dtype,
                "tp": w.tensor_parallel,
                "gmu": w.gmu,
                "total": g.total,
                "free_at_start": free,
                "kv_bytes": w.kv_bytes // w.tensor_parallel,
                "layers": f.layers,
                "kv_heads": f.kv_heads,
                "head_dim": f.head_dim,
                "cross": f.cross_tokens > 0,
                "quantization": f.quantization,
                "capability": list(g.capability),
                "sleep_mode": w.idle == "sleep",  # worker_spec: --enable-sleep-mode
                "pp": w.pipeline_parallel,
                "node_rank": w.node_rank,
                "estimate": {
                    "cuda_context": w.cuda_context,
                    "weights": w.weights // w.tensor_parallel,
                    "activation": w.activation,
                    "non_torch": w.non_torch,
                    "graphs": w.graphs,
                },
            }
        )
    return rows


def vllm_python() -> Path:
    rt = Runtimes(Home.from_env().runtimes)
    py = rt.python_of(rt.vllm)
    if not py.exists():
        raise RuntimeError(f"vLLM runtime missing at {py}: run `memoria setup` (the test script does)")
    return py


def vllm_parse(argvs: list[list[str]]) -> list[dict[str, Any]]:
    """Each `vllm serve` argv through the installed vLLM's own parser (tests/tools/vllm_parse.py)."""
    proc = subprocess.run(
        [str(vllm_python()), str(PARSER)], input=json.dumps(argvs), capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_oracle(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """vLLM's verdict on each row, and the vLLM version that gave it (one process: its import takes ~20 s)."""
    proc = subprocess.run(
        [str(vllm_python()), str(ORACLE)],
        input=json.dumps({"workers": rows}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-2]), json.loads(lines[-1])["vllm"]
