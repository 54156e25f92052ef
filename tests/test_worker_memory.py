"""What each worker's processes really hold, from NVML's per-process figures, against the plan."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import psutil
import pytest

from memoria_cli.commands.status import worker_memory
from memoria_cli.core.inventory import probe_gpus
from memoria_cli.core.units import GiB, MiB
from memoria_cli.run.vllm_report import StartupReport, warnings
from tests.helpers import run_state, worker_plan


class FakeNvml:
    """pynvml's calls as probe_gpus makes them, over one L4 whose compute processes are given."""

    def __init__(self, procs: list[tuple[int, int]]) -> None:
        self.procs = procs

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA L4"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=23034 * MiB, free=8 * GiB)

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return (8, 9)

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.procs]


@pytest.mark.medium
def test_nvml_figures_are_summed_over_the_workers_process_tree(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # stands for the engine core
    try:
        me = psutil.Process()
        gpus = probe_gpus(FakeNvml([(os.getpid(), 600 * MiB), (child.pid, 11 * GiB), (1, 5 * GiB)]))
        assert [p.used for p in gpus[0].processes] == [600 * MiB, 11 * GiB, 5 * GiB]
        state = run_state(
            engine="cuda",
            processes={
                "chat": {"pid": me.pid, "create_time": me.create_time(), "devices": [0]},
                "gone": {"pid": child.pid, "create_time": 1.0, "devices": [0]},  # a recycled pid: not ours
            },
        )
        used = worker_memory(state, gpus)
        assert used == {"chat": 600 * MiB + 11 * GiB}  # pid 1 is someone else's
        plan = worker_plan(gmu=0.4629, devices=(0,), cuda_context=512 * MiB, kv_bytes=6 * GiB)
        assert warnings(plan, StartupReport(), used["chat"], {0: 23034 * MiB}) == [
            "chat holds 11.6 GiB of GPU memory, over its budget of 10.9 GiB: it takes memory planned for its neighbours"
        ]
    finally:
        child.kill()
        child.wait()


def test_cpu_engine_reports_resident_memory():
    me = psutil.Process()
    used = worker_memory(run_state(processes={"w": {"pid": me.pid, "create_time": me.create_time()}}))
    assert used["w"] >= me.memory_info().rss * 0.5
