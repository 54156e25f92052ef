"""Copied as `sitecustomize.py` into the folder that a CPU worker's PYTHONPATH names, so Python loads it in
every process of the worker (API server, engine core, model worker: vLLM starts the last two with `spawn`).
Standard library only, and it never raises: if vLLM's code is not what it expects, vLLM runs untouched.

Why: vLLM's engine core and model worker hand each step to each other through shared memory and, for a second
after every message, wait for the next one by spinning on `sched_yield()`. On a GPU host that shaves
microseconds off each step; on a CPU host the spinning takes the cores that the model, the API server and the
proxy need. Measured on 2 cores: a full core for the second after each request (0.1 s of it with the pause);
under a stream of embedding batches py-spy found the engine core 35 % and the model worker 42 % of their
samples in `sched_yield`; one-text embeddings of all-MiniLM-L6-v2, 16 at a time through
the proxy, swung between 89 and 298 requests/s from one run to the next, and ran at 364-503/s with a 100 µs
sleep in its place (`bench/spin_pause.py`).

MEMORIA_SPIN_PAUSE_US (set by memoria on CPU workers) is the pause in microseconds; 0 or unset leaves vLLM's
spinning as it is (a profile can set it to 0 in a model's `env`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

PAUSE_ENV = "MEMORIA_SPIN_PAUSE_US"
TARGET = "vllm.distributed.utils"  # defines sched_yield(); shm_broadcast imports it from here


class _PauseInsteadOfSpin:
    """A meta-path finder that lets TARGET load normally, then swaps its sched_yield for a short sleep: before
    any other module imports the name, and without importing vLLM (or torch) early."""

    def __init__(self, pause: float) -> None:
        self.pause = pause

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != TARGET:
            return None
        from importlib.machinery import PathFinder

        sys.meta_path.remove(self)  # once is enough
        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load, pause = spec.loader.exec_module, self.pause

        def exec_module(module: ModuleType) -> None:
            load(module)
            if callable(getattr(module, "sched_yield", None)):
                setattr(module, "sched_yield", lambda: time.sleep(pause))  # noqa: B010

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    try:
        pause = float(os.environ.get(PAUSE_ENV, "0")) / 1e6
    except ValueError:
        return
    if pause > 0 and TARGET not in sys.modules:
        sys.meta_path.insert(0, _PauseInsteadOfSpin(pause))


if __name__ == "sitecustomize":  # loaded by Python at start-up, not imported by memoria
    install()
