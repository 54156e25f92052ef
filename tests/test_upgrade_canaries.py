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
assert "self.model_group_alias" in inspect.getsource(Router.__init__)  # members.aliased reads it
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
# spans (core/gpu_memory.pp_layers copies the split; core/worker_spec.span_args sets the multi-node fields)
assert [du.get_pp_indices(10, r, 4) for r in range(4)] == [(0, 2), (2, 5), (5, 8), (8, 10)]
from vllm.config.parallel import ParallelConfig
assert {"nnodes", "node_rank", "master_addr", "master_port"} <= set(ParallelConfig.__dataclass_fields__)
import vllm.envs as envs
assert "VLLM_HOST_IP" in envs.environment_variables
# the CPU runner skips its warm-up in eager mode (so a span's later stage cannot be --enforce-eager there):
# when this changes, worker_spec may make CPU stages eager again (~30 s less per start)
from vllm.v1.worker.cpu_model_runner import CPUModelRunner
assert "CompilationMode.NONE" in inspect.getsource(CPUModelRunner.warming_up_model)
print("ok")
"""


@pytest.mark.parametrize(("runtime", "code"), [("litellm", LITELLM), ("vllm", VLLM)])
def test_the_pinned_runtimes_have_what_memoria_uses(runtime: str, code: str) -> None:
    rt = Runtimes(DEFAULT_RUNTIMES)
    py = rt.litellm if runtime == "litellm" else rt.python_of(rt.vllm)
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
