"""What memoria relies on in the pinned LiteLLM and vLLM, checked in their own interpreters: an upgrade that
moves one of these fails here, in minutes, not silently in the 20-minute tier."""

from __future__ import annotations

import subprocess

import pytest

from memoria_cli.run.runtimes import Runtimes
from tests.helpers import DEFAULT_RUNTIMES

pytestmark = pytest.mark.medium  # the runtimes' own interpreters

LITELLM = r"""
import inspect, uvicorn
import litellm.proxy.proxy_server as ps
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth
from litellm.proxy.types_utils.utils import get_instance_fn
from litellm.router import Router

assert hasattr(ps, "app") and hasattr(ps, "llm_router")  # the app composed, the router the fast path reads
assert "CONFIG_FILE_PATH" in inspect.getsource(ps.proxy_startup_event)  # the launcher's way to the config
assert "spec_from_file_location" in inspect.getsource(get_instance_fn)  # plug-ins loaded by path, beside it
assert "async_pre_call_hook" in vars(CustomLogger)
assert {"data", "call_type"} <= set(inspect.signature(CustomLogger.async_pre_call_hook).parameters)
assert LitellmUserRoles.PROXY_ADMIN and ProxyException and UserAPIKeyAuth
assert "model_name" in inspect.signature(Router.get_model_list).parameters
wanted = {"factory", "server_header", "timeout_graceful_shutdown", "timeout_worker_healthcheck", "workers"}
assert wanted <= set(inspect.signature(uvicorn.Config.__init__).parameters), wanted
print("ok")
"""

VLLM = r"""
import inspect
import vllm.distributed.utils as du
import vllm.sampling_params as sp
assert callable(du.sched_yield)  # plugins/vllm_hooks.py's target
assert "max_tokens must be at least 1, got" in inspect.getsource(sp)  # proxy_fastpath.NO_ROOM
print("ok")
"""


@pytest.mark.parametrize(("runtime", "code"), [("litellm", LITELLM), ("vllm", VLLM)])
def test_the_pinned_runtimes_have_what_memoria_uses(runtime: str, code: str) -> None:
    rt = Runtimes(DEFAULT_RUNTIMES)
    py = rt.litellm if runtime == "litellm" else rt.python_of(rt.vllm)
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
