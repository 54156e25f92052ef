"""`memoria plan`: what fits where, and why, without starting anything."""

from __future__ import annotations

import json

import typer

from memoria_cli.cli.options import GPUS, JSON, PROFILE


def register(app: typer.Typer) -> None:
    app.command(name="plan")(plan_cmd)


def plan_cmd(
    profile: str = PROFILE,
    gpus: str = GPUS,
    as_json: bool = JSON,
    commands: bool = typer.Option(False, "--commands", help="Also print each worker's exact vllm command."),
) -> None:
    """Print the memory plan: per worker its device, weights, KV cache, context, concurrency, GMU and port.

    Example: `memoria plan --gpus L4` or `memoria plan -p default --gpus 2x80GiB --json`.
    """
    from memoria_cli.cli.views import plan_table
    from memoria_cli.core.home import Home
    from memoria_cli.core.profile import load_profile
    from memoria_cli.core.worker_spec import render_argv
    from memoria_cli.run.runtimes import Runtimes
    from memoria_cli.run.stack import make_plan, specs_for

    prof = load_profile(profile)
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
