"""Spans (one model over several hosts, a pipeline stage each) judged by vLLM 0.32's own code, as every GPU plan
is (tests/test_gpu_plan_oracle.py): each host plans its stage alone; vLLM's own layer split, flag validation
with the multi-node settings, free-memory check, KV admission over the stage's layers, capacity figures and
determine_available_memory must agree with it; and the first host's engine core, sizing the cache over every
rank at once, must admit the wished context on all of them."""

from __future__ import annotations

from functools import cache

import pytest

from memoria_cli.core import cluster
from memoria_cli.core.inventory import describe
from memoria_cli.core.model_facts import Facts, read_facts
from memoria_cli.core.plan import WorkerPlan
from memoria_cli.core.planner import plan
from memoria_cli.core.profile import load_profile, parse_profile
from tests.oracle import oracle_inputs, run_oracle, vllm_parse

GB = 1000**3  # the model cards give decimal sizes

pytestmark = pytest.mark.medium  # the vLLM runtime's python

SHAPES = {  # the model cards' config.json figures; bf16 weights as their safetensors hold them
    "qwen3-8b": Facts(int(16.4 * GB), 36, 8, 128, 40960, 2, None, "card", 4096, 12288, 32, 151936),
    "qwen3-14b": Facts(int(29.5 * GB), 40, 8, 128, 40960, 2, None, "card", 5120, 17408, 40, 151936),
    "qwen3-32b": Facts(int(65.5 * GB), 64, 8, 128, 40960, 2, None, "card", 5120, 25600, 64, 151936),
}
CHAT_FP8 = load_profile("default").model("qwen3-4b-thinking-fp8")
CASES = [  # (model, its facts, the hosts' GPUs, GPUs a host gives it, context)
    ("qwen3-14b", SHAPES["qwen3-14b"], ["L4", "L4"], 1, 32768),
    ("qwen3-8b", SHAPES["qwen3-8b"], ["T4", "T4", "T4"], 1, 16384),
    ("qwen3-32b", SHAPES["qwen3-32b"], ["2xL4", "2xL4"], 2, 16384),
    ("qwen3-4b-fp8", read_facts(CHAT_FP8), ["8GiB@8.9", "8GiB@8.9"], 1, 32768),
]


def span_plans(model: str, facts: Facts, gpus: list[str], tp: int, context: int) -> list[tuple[WorkerPlan, dict]]:
    hosts = [{"name": "entry", "address": "10.0.0.1", "entry": True}]
    hosts += [{"name": f"h{i}", "address": f"10.0.0.{i + 2}", "gpus": g} for i, g in enumerate(gpus)]
    entry = {"name": model, "model": f"Org/{model}", "kind": "chat", "context": context}
    entry["span"] = {"hosts": [h["name"] for h in hosts[1:]], "tensor_parallel": tp}
    p = parse_profile({"name": "span", "hosts": hosts, "models": [entry]})
    out = []
    for h in hosts[1:]:
        inv = describe(h["gpus"])
        the_plan = plan(cluster.share(p, h["name"]), inv, {model: facts})
        out.append((the_plan.worker(model), oracle_inputs(the_plan, inv, {model: facts})[0]))
    for _, row in out:  # every rank's KV memory per GPU, as the first host's engine core gathers them
        row["group"] = [r["kv_bytes"] for _, r in out]
    return out


@cache
def verdicts() -> list[tuple[str, WorkerPlan, dict, dict]]:
    rows, meta = [], []
    for model, facts, gpus, tp, context in CASES:
        for w, row in span_plans(model, facts, gpus, tp, context):
            rows.append(row)
            meta.append((model, w, row))
    results, _ = run_oracle(rows)
    return [(*m, r) for m, r in zip(meta, results, strict=True)]


def test_vllm_admits_every_stage_with_the_wished_context_and_its_own_layers():
    for model, w, _, r in verdicts():
        where = f"{model} stage {w.node_rank}"
        assert r["ok"], (where, r.get("error"))
        assert r["stage"] == list(w.layers), where  # vLLM's own split (get_pp_indices)
        assert r["world_size"] == w.pipeline_parallel * w.tensor_parallel, where
        assert w.context == next(c for m, *_, c in CASES if m == model) <= r["vllm_max_len"], where


def test_each_stages_budget_and_figures_are_vllms():
    for model, w, row, r in verdicts():
        where = f"{model} stage {w.node_rank}"
        assert r["requested"] == row["kv_bytes"] + w.fixed // w.tensor_parallel - w.cuda_context, where
        assert r["kv_tokens"] == w.kv_tokens, where
        assert r["concurrency"] == pytest.approx(w.concurrency, abs=0.01), where
        exact, worse = r["simulated"]["1.0"], r["simulated"]["1.5"]
        assert exact["kv"] == row["kv_bytes"] and exact["admitted"] and worse["admitted"], where
        for sim in (exact, worse):
            assert sim["held"] <= w.cuda_context + sim["requested"], where


def test_the_whole_group_holds_the_wished_context_on_its_smallest_rank():
    """get_kv_cache_configs over every rank at once gives each rank the smallest rank's blocks: at least one
    full request of the planned context, and (stages of equal layers) the smallest rank's own figure."""
    by_model: dict[str, list[tuple[WorkerPlan, dict]]] = {}
    for model, w, _, r in verdicts():
        by_model.setdefault(model, []).append((w, r))
    assert sorted(by_model) == sorted(c[0] for c in CASES)
    for model, ranks in by_model.items():
        g = ranks[0][1]["group"]
        assert all(r["group"] == g for _, r in ranks), model  # every rank sees the same group
        assert g["concurrency"] >= 1.0, (model, g)
        if len({w.layers[1] - w.layers[0] for w, _ in ranks}) == 1:
            assert g["kv_tokens"] == min(w.kv_tokens for w, _ in ranks), (model, g)


def test_vllm_parses_every_ranks_command_line_to_its_part():
    """Each host's `vllm serve` line, as `up --as` starts it, through vLLM's own parser: the multi-node settings
    of its stage, the API server on rank 0 only."""
    from pathlib import Path

    from memoria_cli.core.worker_spec import worker_spec

    model, facts, gpus, tp, context = CASES[2]
    lines = []
    for w, _ in span_plans(model, facts, gpus, tp, context):
        entry = parse_profile({"name": "x", "models": [{"name": model, "model": "Org/M", "kind": "chat"}]}).models[0]
        lines.append(list(worker_spec(w, entry, "vllm", None, "m", Path("/c"), Path("/s")).argv))
    got = [r["args"] for r in vllm_parse(lines)]
    for rank, args in enumerate(got):
        assert (args["pipeline_parallel_size"], args["tensor_parallel_size"], args["nnodes"]) == (2, 2, 2)
        assert (args["node_rank"], args["headless"], args["master_addr"]) == (rank, rank > 0, "10.0.0.2")
        assert (args["master_port"], args["distributed_executor_backend"], args["max_model_len"]) == (
            29501,
            "mp",
            context,
        )


def test_memoria_plan_shows_each_stage_and_warns_when_stages_would_disagree(tmp_path):
    """A cluster planned from anywhere: every host's stage, the group's KV cache, and a warning where hosts of
    different cards would run the stages differently (a T4 has no bfloat16)."""
    import subprocess
    import sys

    import yaml

    hosts = [
        {"name": "entry", "address": "10.0.0.1", "entry": True},
        {"name": "b", "address": "10.0.0.2", "gpus": "L4"},
        {"name": "c", "address": "10.0.0.3", "gpus": "T4"},
    ]
    facts = {"weights": "16.4GB", "layers": 36, "kv_heads": 8, "head_dim": 128, "max_context": 40960}
    model = {"name": "big", "model": "Org/Big", "kind": "chat", "context": 8192, "facts": facts}
    model["span"] = {"hosts": ["b", "c"]}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"name": "cl", "hosts": hosts, "models": [model]}))
    r = subprocess.run([sys.executable, "-m", "memoria_cli", "plan", "-p", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "stage 1/2" in r.stdout and "stage 2/2" in r.stdout
    assert "big is one instance over b, c (a pipeline stage each; b serves it)" in r.stdout
    assert "big's stages disagree (dtype auto on b, float16 on c)" in " ".join(r.stderr.split())
    path.write_text(yaml.safe_dump({"name": "cl", "hosts": hosts, "models": [{**model, "dtype": "float16"}]}))
    r = subprocess.run([sys.executable, "-m", "memoria_cli", "plan", "-p", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "disagree" not in r.stderr, r.stderr
