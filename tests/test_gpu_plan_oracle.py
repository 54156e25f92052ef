"""Every GPU plan judged by vLLM 0.32's own memory code (tests/tools/vllm_oracle.py, run in the vLLM runtime).

For each GPU of the matrix and each profile (the default, and each of its models alone), every planned worker
goes through vLLM's flag validation, its start-up free-memory check (with the free memory the worker will
really find, its neighbours started before it), its KV admission over the real per-layer specs, and its
capacity figures. A worker vLLM would refuse fails here; so does a plan whose figures differ from vLLM's.
"""

from __future__ import annotations

from functools import cache

import pytest

from memoria_cli.core.inventory import Inventory, describe
from memoria_cli.core.model_facts import Facts, read_facts
from memoria_cli.core.pins import VLLM_VERSION
from memoria_cli.core.plan import Plan, WorkerPlan, held_at_most
from memoria_cli.core.planner import GPU_MARGIN_FRACTION, plan
from memoria_cli.core.profile import Profile, load_profile
from memoria_cli.core.units import GiB
from tests.oracle import oracle_inputs, run_oracle

pytestmark = pytest.mark.medium  # starts processes: a runtime's python, the CLI, a build

DEFAULT = load_profile("default")
FACTS = {m.name: read_facts(m) for m in DEFAULT.models}
MATRIX = [
    "T4",
    "A10",
    "L4",
    "RTX4090",
    "24GiB@8.9",
    "A100-40GB",
    "A100",
    "H100",
    "H200",
    "2xL4",
    "2xH100",
    "12GiB@8.9",
    "8GiB@8.9",
]
SINGLES = {m.name: Profile(name=m.name, models=[m]) for m in DEFAULT.models}


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
    results, version = run_oracle(rows)
    return [(*m, r) for m, r in zip(meta, results, strict=True)], version


def test_the_oracle_is_the_pinned_vllm():
    """The functions this file imports from vLLM moved or changed meaning before: an upgrade must be noticed."""
    _, version = verdicts()
    assert version.split("+")[0] == VLLM_VERSION


def test_matrix_covers_every_card_and_the_default_profile_fits_from_12_gib():
    seen = {(prof, spec) for prof, spec, *_ in verdicts()[0]}
    for spec in MATRIX:
        if describe(spec).gpus[0].total >= 15 * GiB:
            assert ("default", spec) in seen, f"the default profile does not fit on {spec}"
    assert ("default", "12GiB@8.9") in seen  # with its slot: embedding, OCR and Whisper take turns there
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


def test_vllm_sizes_the_planned_cache_and_the_worker_stays_in_its_budget():
    """vLLM's own determine_available_memory on a simulated GPU: with memoria's estimates as what it measures,
    it finds the KV bytes memoria planned; with every measurement 1.5 times the estimate, the context is
    still admitted (the planner keeps that much headroom); either way the worker holds no more than its CUDA
    context plus ceil(util x total)."""
    for prof, spec, w, row, r in verdicts()[0]:
        where = f"{prof} on {spec}: {w.name}"
        exact, worse = r["simulated"]["1.0"], r["simulated"]["1.5"]
        assert exact["kv"] == row["kv_bytes"], where
        assert exact["admitted"] and worse["admitted"], where
        for sim in (exact, worse):
            assert sim["held"] <= w.cuda_context + sim["requested"], where


def test_every_card_holds_its_workers():
    """Per GPU: CUDA contexts plus budgets stay within the free memory less the margin; a slot counts its
    member awake with its mates asleep, whichever member that is."""
    for prof, spec, p, inv, _ in plans():
        for g in inv.gpus:
            used = held_at_most(p.workers, g.index)
            assert used <= g.free - int(g.total * GPU_MARGIN_FRACTION), (prof, spec, g.index)
            for w in p.workers:
                mates = [o for o in p.workers if o.slot and o.slot == w.slot and o is not w]
                if g.index in w.devices and mates:
                    alone = [o for o in p.workers if g.index in o.devices and o is not w and o not in mates]
                    awake = sum(o.budget // o.tensor_parallel for o in alone if not o.slot)
                    assert awake + w.budget + sum(o.asleep for o in mates) <= used, (prof, spec, w.name)


def test_slots_are_shared_where_the_card_needs_it_and_vllm_agrees_on_sleep_mode():
    """The default profile's slot is used on the 12 and 16 GiB cards (the chat model never in it) and not on
    24 GiB and up; every sleeping worker gets vLLM's sleep mode, with its CUDA graphs kept on the GPU asleep
    (as its `asleep` figure counts them), and each slot member passes vLLM's start-up check with its mates
    asleep and the rest awake (tests/oracle.py `oracle_inputs`)."""
    results, _ = verdicts()
    slotted = {spec for prof, spec, w, _, _ in results if prof == "default" and w.slot}
    assert slotted == {"T4", "12GiB@8.9"}
    for prof, spec, w, row, r in results:
        if w.kind == "chat":
            assert not w.slot
        if w.idle == "sleep":
            assert row["sleep_mode"] and r["sleep_mode"] is True and r["graphs_released_asleep"] is False
            assert w.asleep == w.cuda_context + w.non_torch + w.graphs, (prof, spec, w.name)
        if w.slot:
            mates = sum(o.asleep for o in plans_by(prof, spec).workers if o.slot == w.slot and o is not w)
            assert mates > 0 and row["free_at_start"] >= r["requested"], (prof, spec, w.name)
    chat12 = next(w for prof, spec, w, _, _ in results if (prof, spec) == ("default", "12GiB@8.9") and w.kind == "chat")
    assert chat12.context >= 8192  # with the slot, chat still holds a long conversation on 12 GiB


def plans_by(prof: str, spec: str) -> Plan:
    return next(p for pr, sp, p, _, _ in plans() if (pr, sp) == (prof, spec))
