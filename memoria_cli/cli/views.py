"""Tables people read: the plan, the machine, the running stack, rendered from the records (the stack's uptime
is read from its processes)."""

from __future__ import annotations

import time

from rich.table import Table

from memoria_cli.core.inventory import Inventory
from memoria_cli.core.plan import Plan, WorkerPlan
from memoria_cli.core.units import fmt_duration, fmt_size
from memoria_cli.run.cluster_status import HostView
from memoria_cli.run.state import ProcessRecord, RunState
from memoria_cli.run.vllm_report import StartupReport, budget_of

STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "backoff": "yellow",
    "unhealthy": "red",
    "fatal": "bold red",
    "stopped": "dim",
    "draining": "magenta",
    "sleeping": "blue",
    "waking": "yellow",
}


def plan_table(plan: Plan, inv: Inventory, profile: str) -> Table:
    gpu = plan.engine == "cuda"
    t = Table(title=f"memoria plan: profile {profile} on {_machine(inv)}", title_justify="left")
    cols = [
        "worker",
        "kind",
        "device",
        "weights",
        "activation",
        "graphs",
        "other",
        "KV cache",
        "context",
        "KV tokens",
        "seqs@ctx",
        "GMU" if gpu else "cores",
        "port",
    ]
    for col in cols:
        t.add_column(col, justify="right" if col not in ("worker", "kind", "device") else "left")
    for w in plan.workers:
        dev = ",".join(f"GPU{d}" for d in w.devices) if w.devices else "CPU"
        if w.tensor_parallel > 1:
            dev += f" (TP{w.tensor_parallel})"
        if w.pipeline_parallel > 1:
            dev += f" (stage {w.node_rank + 1}/{w.pipeline_parallel})"
        tp = w.tensor_parallel
        other = w.fixed - w.weights - (w.activation + w.graphs) * tp
        t.add_row(
            w.name,
            w.kind,
            dev,
            fmt_size(w.weights),
            fmt_size(w.activation * tp),
            fmt_size(w.graphs * tp),
            fmt_size(other),
            fmt_size(w.kv_bytes),
            str(w.context),
            str(w.kv_tokens),
            f"{w.sequences_at_full_context:.1f}",
            f"{w.gmu:.4f}" if w.gmu else str(w.cpu_cores),
            "-" if w.headless else str(w.port),
        )
    caption = []
    for d in plan.devices:
        label = f"GPU{d.index} {d.name}" if d.index >= 0 else f"RAM ({d.name})"
        caption.append(
            f"{label}: {fmt_size(d.planned)} planned of {fmt_size(d.usable)} usable "
            f"({fmt_size(d.free)} free, {fmt_size(d.margin)} kept as margin)"
        )
    if gpu:
        caption += [
            "weights: the checkpoint's files (or `facts:`), as stored (FP8 at 1 byte); activation: vLLM's profile "
            "run, the larger of the forward pass over max_num_batched_tokens and the sampler over max_num_seqs x "
            "vocabulary, plus the encoder's largest inputs; graphs: the largest CUDA graph plus 1 MiB per graph; "
            "other: the CUDA context (outside the GMU) and non-torch memory; KV cache: what vLLM finds inside "
            "the GMU once it has measured the rest; context: whole 16-token blocks, one block held back (vLLM's "
            "null block), half the estimated activation, graphs and non-torch kept free of it; KV tokens and "
            "seqs@ctx: what vLLM will log as KV cache size and maximum concurrency (memoria_cli/core/gpu_memory.py)"
        ]
    for w in plan.workers:
        knobs = f"max_num_seqs {w.max_num_seqs}, max_num_batched_tokens {w.max_num_batched_tokens}"
        caption.append(f"{w.name}: " + "; ".join([*w.why, knobs, *idle_lines(w)]))
    caption += list(plan.notes)
    caption.append(
        f"proxy: http://{plan.proxy_host}:{plan.proxy_port}/v1, {plan.proxy_workers} LiteLLM "
        f"process{'es' if plan.proxy_workers > 1 else ''}, fast path "
        f"{'on' if plan.proxy_fast_path else 'off'} for embeddings and chat"
    )
    t.caption = "\n".join(caption)
    t.caption_justify = "left"
    return t


def freed(w: WorkerPlan) -> int:
    """What a parked worker gives back: all of it stopped; asleep, all but what vLLM keeps (per GPU)."""
    return w.budget - w.asleep * w.tensor_parallel if w.idle == "sleep" else w.budget


def idle_lines(w: WorkerPlan) -> list[str]:
    if not w.parks:
        return []
    how = f"sleep (level {w.sleep_level})" if w.idle == "sleep" else "stop"
    line = (
        f"idle after {fmt_duration(w.idle_after)}: {how}, giving back {fmt_size(freed(w))}; requests wait up to "
        f"{fmt_duration(w.hold)} for it to wake"
    )
    if w.idle == "sleep":
        line += f"; asleep it keeps {fmt_size(w.asleep)} per GPU (CUDA context, graphs, non-torch)"
        line += ", its weights in host RAM" if w.sleep_level == 1 else ", its weights dropped (reloaded on wake)"
    return [line] + ([f"slot {w.slot}: one awake at a time with its slot mates"] if w.slot else [])


def _machine(inv: Inventory) -> str:
    if inv.gpus:
        names = {g.name for g in inv.gpus}
        return f"{len(inv.gpus)}x {names.pop()}" if len(names) == 1 else ", ".join(g.name for g in inv.gpus)
    assert inv.cpu is not None
    return f"CPU ({inv.cpu.cores} cores, {fmt_size(inv.cpu.total)} RAM)"


def gpus_table(inv: Inventory) -> Table:
    t = Table(title=f"memoria gpus ({inv.source})", title_justify="left")
    if inv.gpus:
        for col in ("index", "name", "total", "free", "compute", "processes"):
            t.add_column(col)
        for g in inv.gpus:
            procs = ", ".join(f"{p.pid} {p.name} {fmt_size(p.used)}" for p in g.processes) or "-"
            t.add_row(
                str(g.index), g.name, fmt_size(g.total), fmt_size(g.free), f"{g.capability[0]}.{g.capability[1]}", procs
            )
    elif inv.cpu:
        for col in ("device", "name", "RAM total", "RAM available", "cores"):
            t.add_column(col)
        t.add_row("cpu", inv.cpu.name, fmt_size(inv.cpu.total), fmt_size(inv.cpu.available), str(inv.cpu.cores))
    if inv.notes:
        t.caption = "\n".join(inv.notes)
    return t


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = int(time.time() - ts)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status_table(state: RunState, reports: dict[str, StartupReport], used: dict[str, int]) -> Table:
    """Per process: health, and for workers the plan beside what vLLM reported and what the processes hold."""
    plan = {w.name: w for w in state.plan.workers}
    totals = {d.index: d.total for d in state.plan.devices}
    t = Table(title=f"memoria: {state.phase} - profile {state.profile} - {state.url}", title_justify="left")
    for col in (
        "name",
        "kind",
        "state",
        "pid",
        "port",
        "device",
        "mem plan",
        "mem actual",
        "KV plan",
        "KV actual",
        "context",
        "up",
        "restarts",
    ):
        t.add_column(col)
    notes = []
    for name, p in state.processes.items():
        w = plan.get(name)
        dev = ",".join(f"GPU{d}" for d in p.devices) or ("CPU" if w else "-")
        if w and w.pipeline_parallel > 1:
            dev += f" (stage {w.node_rank + 1}/{w.pipeline_parallel})"
        rep = reports.get(name, StartupReport())
        mem_plan = "-"
        if w:
            budget = budget_of(w, totals)
            mem_plan = fmt_size(budget if budget is not None else w.fixed + w.kv_bytes)
        mem_act = fmt_size(used[name]) if name in used else "-"
        kv_plan = f"{w.kv_tokens or w.kv_bytes // max(1, w.kv_per_token)} tok" if w else "-"
        kv_act = f"{rep.kv_tokens} tok" if rep.kv_tokens is not None else "-"
        style = STATE_STYLE.get(p.state, "")
        uptime = _wall(p) if p.state == "ready" else "-"
        t.add_row(
            name,
            p.kind,
            f"[{style}]{p.state}[/]",
            str(p.pid or "-"),
            "-" if w and w.headless else str(p.port),
            dev,
            mem_plan,
            mem_act,
            kv_plan,
            kv_act,
            str(w.context) if w else "-",
            uptime,
            str(p.restarts),
        )
        if p.state == "sleeping" and w:
            notes.append(f"{name}: {p.reason} (gives back {fmt_size(freed(w))})")
        elif p.state not in ("ready", "stopped") and p.reason:
            notes.append(f"{name}: {p.reason}")
        if p.note:
            notes.append(f"{name}: {p.note}")
    notes.append(
        "mem: per GPU, the CUDA context plus the utilization budget, against what NVML sees the worker's "
        "processes hold (resident memory on the CPU engine); KV: tokens planned against vLLM's own report"
    )
    auth = "on (LITELLM_MASTER_KEY)" if state.auth else "off (any key accepted, loopback only)"
    notes.append(f"auth: {auth}")
    t.caption = "\n".join(notes)
    t.caption_justify = "left"
    return t


def hosts_table(hosts: list[HostView]) -> Table:
    """A cluster entry's other hosts: whether it routes to each, and each one's workers as the host says."""
    t = Table(title="other hosts of the cluster (as this entry sees them)", title_justify="left")
    for col in ("host", "kind", "address", "rotation", "workers"):
        t.add_column(col)
    for h in hosts:
        style = "green" if h.rotation == "in" else "red"
        workers = ", ".join(f"{n} {s}" for n, s in h.workers.items()) if not h.error else f"[yellow]{h.error}[/]"
        t.add_row(h.name, h.kind, h.base, f"[{style}]{h.rotation}[/]", workers or "-")
    return t


def _wall(p: ProcessRecord) -> str:
    """Uptime from the monotonic stamps is not comparable across processes: use the process's own start."""
    import psutil

    try:
        return _ago(psutil.Process(p.pid).create_time())
    except Exception:
        return "-"
