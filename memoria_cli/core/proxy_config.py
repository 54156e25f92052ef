"""The LiteLLM proxy's routing config, rendered from the plan (pure; run/stack.py writes it, with the plug-ins).

One deployment per worker (`hosted_vllm/<served-name>` at its port), one `model_name` per public name, the
Hugging Face ids as `model_group_alias` (LiteLLM lists those in /v1/models too). No database, no UI.
Auth: with LITELLM_MASTER_KEY in the environment the proxy requires it; without, any key is accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from memoria_cli.core.errors import PreflightError
from memoria_cli.core.kinds import KINDS
from memoria_cli.core.plan import Plan
from memoria_cli.core.profile import Profile
from memoria_cli.core.units import REQUEST_TIMEOUT

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
WEAK_KEY_ENV = "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"
PARKED_HEALTH_TIMEOUT = 5  # seconds: read by litellm/proxy/health_check.py from model_info


def render(
    plan: Plan,
    profile: Profile,
    auth: bool,
    bases: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`bases`: each worker's URL where it is not on this host's loopback (a Kubernetes Service). `aliases`:
    every alias the proxy answers to, where models run elsewhere too (a cluster's entry: core/cluster.py)."""
    model_list = []
    names: dict[str, str] = dict(aliases or {})
    for i, w in enumerate(plan.workers):
        if w.headless:
            continue  # a span's later stage: its first host serves the model
        entry = profile.model(w.name)
        info: dict[str, Any] = {"mode": KINDS[w.kind].litellm_mode}
        if KINDS[w.kind].vision:
            info["supports_vision"] = True
        if w.idle == "sleep":
            # asleep, vLLM queues requests unanswered: /health's call (which plugins/hold.py does not hold:
            # it must not wake anything) would wait LiteLLM's 60 s (litellm/constants.py HEALTH_CHECK_TIMEOUT_SECONDS)
            info["health_check_timeout"] = PARKED_HEALTH_TIMEOUT
        model_list.append(
            {
                "model_name": w.name,
                "litellm_params": {
                    "model": f"hosted_vllm/{w.name}",
                    "api_base": (bases or {}).get(w.name, f"http://127.0.0.1:{w.port}/v1"),
                    # with auth each worker has a key of its own, from the proxy's environment (never in this file)
                    "api_key": f"os.environ/{worker_key_env(i)}" if auth else "none",
                },
                "model_info": info,
            }
        )
        for a in entry.aliases:
            names[a] = w.name
    general: dict[str, Any] = {"disable_spend_logs": True, "disable_error_logs": True}
    if auth:
        general["master_key"] = f"os.environ/{MASTER_KEY_ENV}"  # the key itself never lands in a file
        general["custom_auth"] = "memoria_hooks.user_api_key_auth"  # 401 for a missing or wrong key
    return {
        "model_list": model_list,
        "router_settings": {
            "model_group_alias": names,
            # One retry covers a pooled keep-alive connection that vLLM closed just as it was reused.
            "num_retries": 1,
        },
        "litellm_settings": {
            "request_timeout": int(REQUEST_TIMEOUT),
            "drop_params": False,
            "disable_hf_tokenizer_download": True,  # offline: never fetch tokenizers for token counting
            "telemetry": False,
            "callbacks": ["memoria_hooks.proxy_handler"],  # plugins/litellm_hooks.py, copied beside this file
        },
        "general_settings": general,
    }


def worker_key_env(index: int) -> str:
    """The proxy's variable holding worker `index`'s key (the worker gets it as VLLM_API_KEY)."""
    return f"MEMORIA_WORKER_KEY_{index}"


def worker_keys(plan: Plan) -> dict[str, str]:
    """A fresh random key per worker, for a stack with auth: a local user who reaches a worker's port directly
    still needs one. Made at each `up`, kept only in the processes' environments."""
    import secrets

    return {w.name: secrets.token_urlsafe(32) for w in plan.workers if not w.headless}


def auth_env(host: str, environ: dict[str, str] | None = None) -> tuple[bool, dict[str, str]]:
    """(auth on?, env for the proxy). Refuses to listen beyond loopback without a master key."""
    environ = dict(os.environ) if environ is None else environ
    key = environ.get(MASTER_KEY_ENV, "")
    if key:
        return True, {MASTER_KEY_ENV: key}
    if host not in LOOPBACK:
        raise PreflightError(
            f"the proxy would listen on {host} with no authentication",
            f"set {MASTER_KEY_ENV} in the environment, or keep proxy.host at 127.0.0.1",
        )
    return False, {WEAK_KEY_ENV: "true"}
