"""vllm_hooks.py, copied as sitecustomize.py where CPU workers' PYTHONPATH looks: it turns vLLM's spin-wait
between engine steps into a short sleep, in every process Python starts there, and leaves vLLM alone otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memoria_cli.plugins.vllm_hooks import PAUSE_ENV
from memoria_cli.run.runtimes import Runtimes
from memoria_cli.run.stack import write_vllm_site
from tests.helpers import DEFAULT_RUNTIMES

PROBE = """
import time, vllm.distributed.device_communicators.shm_broadcast as s, vllm.distributed.utils as u
t = time.perf_counter()
for _ in range(100):
    s.sched_yield()
print(s.sched_yield is u.sched_yield, s.sched_yield.__name__, round((time.perf_counter() - t) * 1e4))
"""

pytestmark = pytest.mark.medium  # starts processes: a runtime's python, the CLI, a build


@pytest.fixture
def site(tmp_path) -> Path:
    write_vllm_site(tmp_path / "site")
    return tmp_path / "site"


def probe(python: str, site: Path, pause: str | None, path: Path | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in (PAUSE_ENV, "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (site, path) if p)
    if pause is not None:
        env[PAUSE_ENV] = pause
    r = subprocess.run([python, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.split()


def fake_vllm(root: Path) -> Path:
    """The two modules the hook touches, shaped as vLLM has them (sched_yield defined in one, imported by name
    into the other), and nothing else: the mechanism, without torch."""
    d = root / "vllm" / "distributed"
    (d / "device_communicators").mkdir(parents=True)
    for f in (root / "vllm" / "__init__.py", d / "__init__.py", d / "device_communicators" / "__init__.py"):
        f.write_text("")
    (d / "utils.py").write_text("import os\ndef sched_yield():\n    os.sched_yield()\n")
    (d / "device_communicators" / "shm_broadcast.py").write_text("from vllm.distributed.utils import sched_yield\n")
    return root


def test_the_pause_replaces_sched_yield_before_anyone_imports_it(site, tmp_path):
    fake = fake_vllm(tmp_path / "fake")
    same, name, per_call = probe(sys.executable, site, "100", fake)
    assert same == "True" and name == "<lambda>"
    assert int(per_call) >= 100  # microseconds per wait: it sleeps now


@pytest.mark.parametrize("pause", [None, "0", "junk"])
def test_without_a_pause_vllm_is_left_alone(site, tmp_path, pause):
    fake = fake_vllm(tmp_path / "fake")
    same, name, _ = probe(sys.executable, site, pause, fake)
    assert same == "True" and name == "sched_yield"


def test_the_hook_finds_its_target_in_the_vllm_runtime(site):
    """Against the vLLM memoria installs: if a new vLLM moves sched_yield, this fails instead of the pause
    silently doing nothing."""
    runtimes = Runtimes(DEFAULT_RUNTIMES)
    py = runtimes.python_of(runtimes.vllm)
    if not py.exists():
        pytest.fail(f"vLLM runtime missing at {py}: run `memoria setup` (the test script does)")
    same, name, per_call = probe(str(py), site, "100")
    assert same == "True" and name == "<lambda>" and int(per_call) >= 100
