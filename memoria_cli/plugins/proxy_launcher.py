"""memoria's LiteLLM proxy: LiteLLM's own app with memoria's layers composed in front, served by uvicorn.

Copied beside the generated config as memoria_proxy.py and run by LiteLLM's interpreter:

    python memoria_proxy.py --config litellm.yaml --host 127.0.0.1 --port 8200 [--workers N]

The composition is explicit (`litellm_hooks.compose`) rather than a patch applied when a plug-in happens to
be imported. LiteLLM's start-up reads the config from CONFIG_FILE_PATH (proxy_server.py `proxy_startup_event`,
the variable its Docker image documents), so this does what `litellm --config` does for a proxy without a
database, and uvicorn gets the same settings LiteLLM's CLI gives it (proxy_cli.py
`get_default_unvicorn_init_args`: no server header, GRACEFUL_SHUTDOWN_TIMEOUT, LITELLM_LOG's level).
Standard library only until LiteLLM is imported; never imports memoria.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def app() -> Any:
    """uvicorn's factory, called in each worker process."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import memoria_hooks  # beside this file, in the proxy's folder
    from litellm.proxy.proxy_server import app as litellm_app

    return memoria_hooks.compose(litellm_app)


def uvicorn_settings(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, Any]:
    """What uvicorn.run gets: LiteLLM's CLI's own choices for the settings memoria uses."""
    settings: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "factory": True,
        "server_header": False,
        "timeout_graceful_shutdown": int(environ.get("GRACEFUL_SHUTDOWN_TIMEOUT", "30")),
        "log_level": environ.get("LITELLM_LOG", "WARNING").lower(),
    }
    if args.workers > 1:
        settings["timeout_worker_healthcheck"] = args.worker_healthcheck
    return settings


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="memoria_proxy.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8200)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--worker-healthcheck", type=int, default=60)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    os.environ["CONFIG_FILE_PATH"] = os.path.abspath(args.config)
    os.environ["NUM_WORKERS"] = str(args.workers)  # as LiteLLM's CLI sets it
    # uvicorn's worker processes import "memoria_proxy" by name: the proxy's folder must be on their path
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
    import uvicorn

    uvicorn.run("memoria_proxy:app", **uvicorn_settings(args, dict(os.environ)))


if __name__ == "__main__":
    main()
