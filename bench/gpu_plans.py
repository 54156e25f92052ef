"""memoria's GPU plans beside the seed's hand-tuned split, both judged by vLLM 0.32's own memory code.

    .venv/bin/python bench/gpu_plans.py

For every card of the matrix: the default profile's plan (chat context and KV tokens, each worker's budget:
CUDA context + utilization), and vLLM's verdict on every worker (tests/tools/vllm_oracle.py: flag
validation, the start-up free-memory check in start order, KV admission, and determine_available_memory on
a simulated GPU). Then the seed's docker-compose split (embedding 15 %, chat 40 % or 70 %, OCR 25 %,
Whisper 11 %, vLLM's own defaults for everything else, contexts as the default profile wishes them) on the
same cards, with the KV cache vLLM would find inside each fraction by the same memory model, through the
same oracle. Prints markdown tables and a last `headline:` line.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memoria_cli.core.gpu_memory import CUDA_CONTEXT, batched_tokens, kv_layout, worker_memory
from memoria_cli.core.inventory import describe
from memoria_cli.core.kinds import KINDS
from memoria_cli.core.model_facts import read_facts
from memoria_cli.core.planner import plan
from memoria_cli.core.profile import load_profile
from memoria_cli.core.units import GiB
from tests.oracle import oracle_inputs, run_oracle

CARDS = ["T4", "A10", "L4", "RTX4090", "24GiB@8.9", "A100-40GB", "A100", "H100", "H200", "2xL4", "2xH100", "12GiB@8.9"]
SEED = {
    "qwen3-embedding-0.6b": 0.15,
    "qwen3-4b-thinking-fp8": 0.40,
    "hunyuan-ocr": 0.25,
    "whisper-large-v3-turbo": 0.11,
}
SEED_CHAT_MAX = 0.70
CHAT = "qwen3-4b-thinking-fp8"


def memoria_rows(profile, facts):
    rows, meta = [], []
    for spec in CARDS:
        inv = describe(spec)
        try:
            p = plan(profile, inv, facts)
        except Exception as exc:  # a refusal is a result here
            meta.append((spec, None, getattr(exc, "hint", str(exc))))
            continue
        meta.append((spec, p, oracle_inputs(p, inv, facts)))
        rows += meta[-1][2]
    return rows, meta


def seed_rows(profile, facts, spec: str, chat_fraction: float):
    """The seed's compose file on one card, as vLLM would size it: its defaults for max_num_seqs and
    max_num_batched_tokens on that card, the KV cache whatever is left in each fraction."""
    inv = describe(spec)
    g = inv.gpus[0]
    base = oracle_inputs(plan(profile, describe("H200"), facts), describe("H200"), facts)  # shapes and configs
    rows, held = [], 0
    for row in base:
        entry = profile.model(row["name"])
        f = facts[row["name"]]
        gmu = chat_fraction if row["name"] == CHAT else SEED[row["name"]]
        context = min(entry.context or KINDS[entry.kind].context, f.max_context)
        seqs = entry.max_num_seqs or (1024 if g.total >= 70 * GiB and "a100" not in g.name.lower() else 256)
        batched = batched_tokens(entry.kind, context, seqs, g.total, g.name)
        weights = f.served("float16" if g.capability < (8, 0) else None)[0]
        mem = worker_memory(f, entry.kind, weights, 2, 1, seqs, batched, eager=False)
        requested = math.ceil(g.total * gmu)
        layout = kv_layout(f, 2, 1, batched)
        kv = requested - mem.inside
        rows.append(
            {
                **row,
                "max_model_len": context,
                "max_num_seqs": seqs,
                "max_num_batched_tokens": batched,
                "gmu": gmu,
                "total": g.total,
                "free_at_start": g.free - held - CUDA_CONTEXT,
                "kv_bytes": kv,
                "capability": list(g.capability),
                "kv_cache_dtype": "auto",
                "dtype": "float16" if g.capability < (8, 0) else row["dtype"],
                "estimate": {
                    **row["estimate"],
                    "weights": weights,
                    "activation": mem.activation,
                    "graphs": mem.graphs,
                    "non_torch": mem.non_torch,
                },
                "_tokens": layout.kv_tokens(kv, context) if kv > 0 else 0,
            }
        )
        held += CUDA_CONTEXT + requested
    return rows


def main() -> None:
    profile = load_profile("default")
    facts = {m.name: read_facts(m) for m in profile.models}
    mine, meta = memoria_rows(profile, facts)
    seed_cards = ["T4", "A10", "L4", "RTX4090", "24GiB@8.9", "A100-40GB", "H100"]
    seeds = {
        (spec, frac): seed_rows(profile, facts, spec, frac) for spec in seed_cards for frac in (0.40, SEED_CHAT_MAX)
    }
    all_rows = mine + [r for rows in seeds.values() for r in rows]
    verdicts, version = run_oracle([{k: v for k, v in r.items() if k != "_tokens"} for r in all_rows])
    mine_v, seed_v = verdicts[: len(mine)], verdicts[len(mine) :]

    print(f"vLLM {version} judged every worker below.\n")
    print("| GPU | chat context | chat KV tokens | budgets (GiB): embedding / chat / OCR / Whisper | vLLM admits |")
    print("|---|---|---|---|---|")
    i = 0
    for spec, p, rows in meta:
        if p is None:
            print(f"| {spec} | - | - | refused: {rows} | - |")
            continue
        got = mine_v[i : i + len(rows)]
        i += len(rows)
        chat = p.worker(CHAT)
        budgets = " / ".join(f"{w.budget / w.tensor_parallel / GiB:.2f}" for w in p.workers)
        ok = sum(r["ok"] and r["simulated"]["1.5"]["admitted"] for r in got)
        print(f"| {spec} | {chat.context} | {chat.kv_tokens:,} | {budgets} | {ok} of {len(got)} |")

    print(
        "\n| GPU | seed chat at 40 %: KV tokens | seed at 70 % | memoria | memoria / seed 40 % | "
        "seed workers vLLM refuses (40 %; 70 %) |"
    )
    print("|---|---|---|---|---|---|")
    j, ratios = 0, []
    for spec in seed_cards:
        cells, refused = [], []
        for frac in (0.40, SEED_CHAT_MAX):
            rows = seeds[(spec, frac)]
            got = seed_v[j : j + len(rows)]
            j += len(rows)
            chat = next(r for r in rows if r["name"] == CHAT)
            cells.append(f"{chat['_tokens']:,}")
            refused.append(
                ", ".join(f"{r['name']} ({_why(v)})" for r, v in zip(rows, got, strict=True) if not v["ok"]) or "none"
            )
        p = next(p for s, p, _ in meta if s == spec)
        mine_tokens = p.worker(CHAT).kv_tokens if p else 0
        seed40 = int(cells[0].replace(",", ""))
        ratio = mine_tokens / seed40 if seed40 > 0 else float("inf")
        if seed40 > 0 and p:
            ratios.append(ratio)
        print(f"| {spec} | {cells[0]} | {cells[1]} | {mine_tokens:,} | {ratio:.2f}x | {refused[0]}; {refused[1]} |")
    best = min(ratios) if ratios else 0
    print(
        f"\nheadline: memoria's chat KV tokens / the seed's 40 % split, worst card: {best:.2f}x; "
        f"every memoria worker admitted by vLLM: {all(r['ok'] for r in mine_v)}"
    )


def _why(v: dict) -> str:
    err = v.get("error", "")
    if "Free memory on device" in err:
        return "not enough free memory at its start"
    if "max seq len" in err or "KV cache" in err:
        return "KV cache below one full request"
    return err.split(":")[0][:60]


if __name__ == "__main__":
    main()
