"""One module per command; this is the one place they are registered, in the order `--help` lists them."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from memoria_cli.commands import (
        chat,
        completion,
        down,
        embed,
        export,
        gpus,
        logs,
        models,
        ocr,
        plan,
        profiles,
        pull,
        restart,
        service,
        setup,
        status,
        supervise,
        transcribe,
        up,
    )

    for module in (
        up,
        down,
        status,
        logs,
        restart,
        plan,
        export,
        pull,
        gpus,
        profiles,
        setup,  # the service
        service,
        completion,
        models,
        chat,
        embed,
        ocr,
        transcribe,  # the clients
        supervise,
    ):
        module.register(app)
