"""Every GPU plan judged by vLLM 0.32's own memory code (tests/tools/vllm_oracle.py, run in the vLLM runtime).

For each GPU of the matrix and each profile (the default, and each of its models alone), every planned worker
goes through vLLM's flag validation, its start-up free-memory check (with the free memory the worker will
really find, its neighbours started before it), its KV admission over the real per-layer specs, and its
capacity figures. A worker vLLM would refuse fails here; so does a plan whose figures differ from vLLM's.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache

import pytest

from memoria_cli.gpu_memory import BLOCK_SIZE, CUDA_CONTEXT
from memoria_cli.inventory import Inventory, describe
from memoria_cli.model_facts import Facts, read_facts
from memoria_cli.planner import GPU_MARGIN_FRACTION, Plan, WorkerPlan, plan
from memoria_cli.profile import Profile, load_profile
from memoria_cli.runtimes import VLLM_VERSION, Runtimes
from memoria_cli.units import GiB
from tests.conftest import DEFAULT_RUNTIMES, TOOLS

DEFAULT = load_profile("default")
FACTS = {m.name: read_facts(m) for m in DEFAULT.models}
MATRIX = ["T4", "A10", "L4", "RTX4090", "24GiB@8.9", "A100-40GB", "A100", "H100", "H200", "2xL4", "2xH100",
          "12GiB@8.9", "8GiB@8.9"]
SINGLES = {m.name: Profile(name=m.name, models=[m]) for m in DEFAULT.models}


def hf_config(f: Facts, kind: str) -> dict:
    """A config.json with the model's shape, for vLLM's config code (no weights are loaded). The vision
    model's decoder is given as a Qwen3 decoder of the same shape: its KV specs are what the check needs."""
    if kind == "transcription":
        return {"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
                "d_model": f.hidden, "decoder_attention_heads": f.kv_heads, "encoder_attention_heads": f.kv_heads,
                "decoder_layers": f.layers, "encoder_layers": 32, "decoder_ffn_dim": f.intermediate,
                "encoder_ffn_dim": f.encoder_ffn, "max_source_positions": f.cross_tokens,
                "max_target_positions": f.max_context, "num_mel_bins": 128, "vocab_size": f.vocab,
                "torch_dtype": "float16", "decoder_start_token_id": 50258, "eos_token_id": 50257,
                "pad_token_id": 50257, "bos_token_id": 50257}
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": f.hidden,
            "intermediate_size": f.intermediate, "num_hidden_layers": f.layers,
            "num_attention_heads": f.heads, "num_key_value_heads": f.kv_heads, "head_dim": f.head_dim,
            "max_position_embeddings": f.max_context, "vocab_size": f.vocab, "torch_dtype": "bfloat16",
            "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "hidden_act": "silu"}


def oracle_inputs(p: Plan, inv: Inventory, facts: dict[str, Facts]) -> list[dict]:
    """Each worker as vLLM will see it, in start order; the free memory at its start is the card's free
    memory less what the workers started before it hold (their CUDA context and their whole budget)."""
    held = {g.index: 0 for g in inv.gpus}
    rows = []
    for w in p.workers:
        f = facts[w.name]
        g = inv.gpus[w.devices[0]]
        free = g.free - max(held[d] for d in w.devices) - CUDA_CONTEXT
        rows.append({
            "name": w.name, "kind": w.kind, "config": hf_config(f, w.kind), "max_model_len": w.context,
            "model_max_len": f.max_context, "max_num_seqs": w.max_num_seqs,
            "max_num_batched_tokens": w.max_num_batched_tokens, "block_size": BLOCK_SIZE,
            "dtype": w.dtype or "bfloat16", "kv_cache_dtype": w.kv_cache_dtype, "tp": w.tensor_parallel,
            "gmu": w.gmu, "total": g.total, "free_at_start": free, "kv_bytes": w.kv_bytes // w.tensor_parallel,
            "layers": f.layers, "kv_heads": f.kv_heads, "head_dim": f.head_dim, "cross": f.cross_tokens > 0,
            "quantization": f.quantization, "capability": list(g.capability)})
        for d in w.devices:
            held[d] += CUDA_CONTEXT + w.budget // w.tensor_parallel - w.cuda_context
    return rows


def plans() -> list[tuple[str, str, Plan, Inventory, dict[str, Facts]]]:
    """Every (profile, GPU) of the matrix that fits."""
    out = []
    for spec in MATRIX:
        inv = describe(spec)
        for prof in [DEFAULT, *SINGLES.values()]:
            facts = {m.name: FACTS[m.name] for m in prof.models}
            try:
                out.append((prof.name, spec, plan(prof, inv, facts), inv, facts))
            except Exception:  # does not fit: test_refusals covers those
                continue
    return out


@cache
def verdicts() -> tuple[list[tuple[str, str, WorkerPlan, dict, dict]], str]:
    """One run of the oracle for the whole matrix (vLLM's import takes ~20 s)."""
    rows, meta = [], []
    for prof, spec, p, inv, facts in plans():
        for w, row in zip(p.workers, oracle_inputs(p, inv, facts), strict=True):
            rows.append(row)
            meta.append((prof, spec, w, row))
    py = Runtimes(DEFAULT_RUNTIMES).python_of(Runtimes(DEFAULT_RUNTIMES).vllm)
    if not py.exists():
        pytest.fail(f"vLLM runtime missing at {py}: run `memoria setup` (the test script does)")
    proc = subprocess.run([str(py), str(TOOLS / "vllm_oracle.py")], input=json.dumps({"workers": rows}),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    results, version = json.loads(lines[-2]), json.loads(lines[-1])["vllm"]
    return [(*m, r) for m, r in zip(meta, results, strict=True)], version


def test_the_oracle_is_the_pinned_vllm():
    """The functions this file imports from vLLM moved or changed meaning before: an upgrade must be noticed."""
    _, version = verdicts()
    assert version.split("+")[0] == VLLM_VERSION


def test_matrix_covers_every_card_and_the_default_profile_fits_from_16_gib():
    seen = {(prof, spec) for prof, spec, *_ in verdicts()[0]}
    for spec in MATRIX:
        if describe(spec).gpus[0].total >= 15 * GiB:
            assert ("default", spec) in seen, f"the default profile does not fit on {spec}"
    assert ("default", "12GiB@8.9") not in seen  # four models do not fit 12 GiB: test_refusals says what does
    for name in SINGLES:
        assert (name, "8GiB@8.9") in seen, f"{name} alone should fit an 8 GiB card"


def test_vllm_admits_every_planned_worker():
    refused = [(prof, spec, w.name, r["error"]) for prof, spec, w, _, r in verdicts()[0] if not r["ok"]]
    assert refused == []


def test_budgets_and_figures_are_vllms():
    """vLLM requests exactly the budget memoria planned, finds the KV blocks memoria computed, and reports the
    KV tokens and concurrency memoria shows; memoria's context is vLLM's longest admitted one, capped at
    the wish (whole blocks of 16)."""
    for prof, spec, w, row, r in verdicts()[0]:
        where = f"{prof} on {spec}: {w.name}"
        assert r["requested"] == row["kv_bytes"] + w.fixed // w.tensor_parallel - w.cuda_context, where
        assert r["kv_tokens"] == w.kv_tokens, where
        assert r["concurrency"] == pytest.approx(w.concurrency, abs=0.01), where
        assert w.context <= r["vllm_max_len"], where
        if w.context < row["model_max_len"] and w.context < (DEFAULT.model(w.name).context or 10**9):
            # cut to fit: then by headroom only (see planner `_Need.headroom`), never by rounding
            assert r["vllm_max_len"] >= w.context


def test_every_card_holds_its_workers():
    """Per GPU: CUDA contexts plus budgets stay within the free memory less the margin."""
    for prof, spec, p, inv, _ in plans():
        for g in inv.gpus:
            used = sum(w.cuda_context + (w.budget // w.tensor_parallel - w.cuda_context)
                       for w in p.workers if g.index in w.devices)
            assert used <= g.free - int(g.total * GPU_MARGIN_FRACTION), (prof, spec, g.index)
