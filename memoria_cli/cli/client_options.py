"""Options every client command shares, and the one way they become an Api."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from memoria_cli.cli import completion
from memoria_cli.core.units import REQUEST_TIMEOUT

if TYPE_CHECKING:
    from memoria_cli.client.api import Api
    from memoria_cli.core.kinds import Kind

MODEL = typer.Option(
    None,
    "--model",
    "-m",
    help="Model name or alias (default: the running profile's one of this kind).",
    autocompletion=completion.models,
)
BASE_URL = typer.Option(
    None,
    "--base-url",
    help="Endpoint (else MEMORIA_BASE_URL, OPENAI_API_BASE, the running stack, http://127.0.0.1:8200/v1).",
)
API_KEY = typer.Option(None, "--api-key", help="Key (else MEMORIA_API_KEY, OPENAI_API_KEY; any works without auth).")
TIMEOUT = typer.Option(REQUEST_TIMEOUT, "--timeout", help="Seconds to wait for an answer.")


def connect(
    kind: Kind, model: str | None, base_url: str | None, api_key: str | None, timeout: float
) -> tuple[Api, str]:
    """(Api, checked model name) for a client command."""
    from memoria_cli.client.api import Api, default_model, resolve_endpoint, running_state

    state = running_state()
    api = Api(resolve_endpoint(base_url, api_key, state=state), timeout=timeout)
    known = api.models()  # is anything there at all? say so before anything else
    return api, api.check_model(model or default_model(kind, state), known)
