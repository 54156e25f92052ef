"""`memoria plan`: what fits where, and why, without starting anything."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from memoria_cli.cli.options import AS_HOST, GPUS, JSON, PROFILE

if TYPE_CHECKING:
    from memoria_cli.core.plan import WorkerPlan
    from memoria_cli.core.profile import Profile


def register(app: typer.Typer) -> None:
    app.command(name="plan")(plan_cmd)


def plan_cmd(
    profile: str = PROFILE,
    gpus: str = GPUS,
    as_host: str | None = AS_HOST,
    as_json: bool = JSON,
    commands: bool = typer.Option(False, "--commands", help="Also print each worker's exact vllm command."),
) -> None:
    """Print the memory plan: per worker its device, weights, KV cache, context, concurrency, GMU and port.

    Example: `memoria plan --gpus L4` or `memoria plan -p default --gpus 2x80GiB --json`. A cluster profile
    is planned host by host (each with its `gpus:`, else --gpus, else this machine); `--as NAME` plans one.
    """
    from memoria_cli.cli.views import plan_table
    from memoria_cli.core.home import Home
    from memoria_cli.core.profile import load_profile
    from memoria_cli.core.worker_spec import render_argv
    from memoria_cli.run.runtimes import Runtimes
    from memoria_cli.run.stack import make_plan, specs_for

    prof = load_profile(profile)
    if prof.hosts and as_host is None:
        return _cluster_plan(prof, gpus, as_json)
    if as_host is not None:
        from memoria_cli.core.cluster import share

        prof = share(prof, as_host)
    inv, the_plan = make_plan(prof, gpus)
    home = Home.from_env()
    specs = specs_for(the_plan, prof, str(Runtimes(home.runtimes).vllm), home)
    if as_json:
        data = the_plan.to_dict()
        data["inventory"] = inv.to_dict()
        data["commands"] = {s.name: {"argv": list(s.argv), "env": s.env} for s in specs}
        print(json.dumps(data, indent=2))
        return
    from memoria_cli.cli.console import out

    out().print(plan_table(the_plan, inv, prof.name))
    if commands:
        for s in specs:
            out().print(f"\n# {s.name}", markup=False)
            out().print(render_argv(s), markup=False)


def _cluster_plan(prof: Profile, gpus: str | None, as_json: bool) -> None:
    """Every host's share, planned as that host will plan it, then where each public name is served."""
    from memoria_cli.cli.console import err, out
    from memoria_cli.cli.views import plan_table
    from memoria_cli.core.cluster import placement, share
    from memoria_cli.run.stack import make_plan
    from memoria_cli.run.supervisor import disagreement

    hosts: dict[str, object] = {}
    stages: dict[str, list[tuple[str, WorkerPlan]]] = {}  # a span -> (host, its stage there)
    for h in prof.hosts:
        where = f"{h.address}:{h.port or prof.proxy.port}"
        if h.kind != "memoria":
            hosts[h.name] = {"kind": h.kind, "address": where, "models": h.models}
            if not as_json:
                out().print(f"host {h.name} ({where}, openai): routed and watched, not run: {', '.join(h.models)}")
            continue
        mine = share(prof, h.name)
        inv, the_plan = make_plan(mine, h.gpus or gpus)
        hosts[h.name] = {"kind": h.kind, "address": where, "entry": h.entry, "plan": the_plan.to_dict()}
        for w in the_plan.workers:
            if w.pipeline_parallel > 1:
                stages.setdefault(w.name, []).append((h.name, w))
        if as_json:
            continue
        role = ", the entry" if h.entry else ""
        out().print(f"\nhost {h.name} ({where}{role})", markup=False)
        if the_plan.workers:
            out().print(plan_table(the_plan, inv, f"{prof.name} as {h.name}"))
        else:
            out().print("  runs no model of its own: routes only", markup=False)
    routes = placement(prof)
    # vLLM's engine core gives every rank of a span the smallest rank's KV blocks (kv_cache_utils.py
    # `get_kv_cache_configs`): the whole instance holds what its tightest stage holds
    spans = {
        name: {
            "hosts": [h for h, _ in got],
            "kv_tokens": min(w.kv_tokens for _, w in got),
            "context": got[0][1].context,
        }
        for name, got in stages.items()
    }
    if as_json:
        print(json.dumps({"hosts": hosts, "placement": routes, "spans": spans}, indent=2))
        return
    out().print("\nserved where (the entry routes each name to these hosts):", markup=False)
    for name, on in routes.items():
        out().print(f"  {name}: {', '.join(on) or 'nowhere'}", markup=False)
    for name, got in stages.items():
        on = [h for h, _ in got]
        out().print(
            f"  {name} is one instance over {', '.join(on)} (a pipeline stage each; {on[0]} serves it): "
            f"{spans[name]['kv_tokens']} KV tokens for the group, context {got[0][1].context}",
            markup=False,
        )
        for host, w in got[1:]:
            if odd := disagreement(got[0][1].stage_flags, w.stage_flags, host, on[0]):
                err().print(
                    f"[yellow]warning:[/] {name}'s stages disagree ({odd}): its first host will refuse to start "
                    "it; set these in the profile for all of them (e.g. `dtype:`)"
                )
