"""What the machine has: NVIDIA GPUs (via NVML) or, without them, the CPU and its RAM.

The probe is a thin layer over pynvml/psutil; the records are plain frozen data, and a described machine
(`--gpus 2x80GiB`, `L4`, a JSON file) yields the same records, so the planner never knows the difference.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memoria_cli.core.errors import InputError
from memoria_cli.core.units import MiB, parse_size


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used: int
    name: str = ""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total: int
    free: int
    capability: tuple[int, int] = (8, 0)
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True)
class Cpu:
    total: int
    available: int
    cores: int
    name: str = "cpu"


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[Gpu, ...] = ()
    cpu: Cpu | None = None
    cores: int = 1  # host CPU cores, for sizing the proxy
    source: str = "probe"
    notes: tuple[str, ...] = field(default=())

    @property
    def engine(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "source": self.source, **asdict(self)}


# Memory as NVML reports it on these boards (MiB), and their compute capability.
KNOWN_GPUS: dict[str, tuple[int, tuple[int, int]]] = {
    "T4": (15360, (7, 5)),
    "V100": (16384, (7, 0)),
    "V100-32GB": (32768, (7, 0)),
    "A10": (23028, (8, 6)),
    "A10G": (23028, (8, 6)),
    "L4": (23034, (8, 9)),
    "RTX3090": (24576, (8, 6)),
    "RTX4090": (24564, (8, 9)),
    "A40": (46068, (8, 6)),
    "A6000": (49140, (8, 6)),
    "L40S": (46068, (8, 9)),
    "A100-40GB": (40960, (8, 0)),
    "A100": (81920, (8, 0)),
    "A100-80GB": (81920, (8, 0)),
    "H100": (81559, (9, 0)),
    "H200": (143771, (9, 0)),
}
_SPEC = re.compile(r"^\s*(?:(\d+)\s*x\s*)?([^@]+?)(?:@(\d+)\.(\d+))?\s*$", re.IGNORECASE)


def describe(spec: str) -> Inventory:
    """A described machine: `24GiB`, `2x80GiB`, `L4`, `2xH100`, `48GiB@8.9`, or a JSON file of GPUs."""
    path = Path(spec).expanduser()
    if spec.endswith(".json") or path.is_file():
        return _from_json_file(path)
    m = _SPEC.match(spec)
    if not m:
        raise InputError(f"cannot read GPU description {spec!r}", "use e.g. 24GiB, 2x80GiB, L4, 2xH100")
    count = int(m.group(1) or 1)
    what = m.group(2).strip()
    known = {k.upper(): v for k, v in KNOWN_GPUS.items()}
    if what.upper() in known:
        mib, cap = known[what.upper()]
        total, name = mib * MiB, what.upper()
    else:
        try:
            total = parse_size(what)
        except InputError:
            raise InputError(
                f"unknown GPU {what!r}", "give a size like 24GiB or one of: " + ", ".join(KNOWN_GPUS)
            ) from None
        cap, name = (8, 0), f"GPU {what}"
    if m.group(3):
        cap = (int(m.group(3)), int(m.group(4)))
    if count < 1 or total <= 0:
        raise InputError(f"GPU description {spec!r} describes no memory")
    gpus = tuple(Gpu(index=i, name=name, total=total, free=total, capability=cap) for i in range(count))
    return Inventory(gpus=gpus, source=f"described: {spec}", cores=host_cores())


def _from_json_file(path: Path) -> Inventory:
    """[{"name": "L4", "total": "23034MiB", "free": "22000MiB", "capability": [8, 9]}, ...], or that list as
    {"gpus": [...], "cores": 64} to describe the host's CPU cores too."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"GPU file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read GPU file {path}: {exc}") from None
    items = raw.get("gpus") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}: expected a list of GPUs", 'e.g. [{"name": "L4", "total": "24GiB"}]')
    gpus = []
    for i, g in enumerate(items):
        try:
            total = parse_size(g["total"])
            free = parse_size(g.get("free", total))
            cap = tuple(g.get("capability", (8, 0)))
            procs = tuple(
                GpuProcess(int(p["pid"]), parse_size(p["used"]), str(p.get("name", ""))) for p in g.get("processes", [])
            )
            gpus.append(
                Gpu(
                    index=i,
                    name=str(g.get("name", f"GPU {i}")),
                    total=total,
                    free=min(free, total),
                    capability=(int(cap[0]), int(cap[1])),
                    processes=procs,
                )
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise InputError(f"{path}: GPU {i} is malformed ({exc})", "each needs at least 'total'") from None
    cores = raw.get("cores") if isinstance(raw, dict) else None
    if cores is not None and (not isinstance(cores, int) or cores < 1):
        raise InputError(f"{path}: 'cores' must be a whole number above 0, not {cores!r}")
    return Inventory(gpus=tuple(gpus), source=f"described: {path}", cores=cores or host_cores())


def probe_gpus(nvml: Any = None) -> tuple[Gpu, ...]:
    """Every NVIDIA GPU NVML sees; () when there is no driver or no GPU. `nvml` is injectable for tests."""
    if nvml is None:
        try:
            import pynvml

            nvml = pynvml
        except ImportError:
            return ()
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded...: no usable GPU here
        return ()
    try:
        visible = _visible_indices(nvml.nvmlDeviceGetCount())
        gpus = []
        for i in visible:
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else str(name)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            cap = tuple(nvml.nvmlDeviceGetCudaComputeCapability(h))
            procs = []
            try:
                for p in nvml.nvmlDeviceGetComputeRunningProcesses(h):
                    procs.append(GpuProcess(int(p.pid), int(p.usedGpuMemory or 0), _proc_name(int(p.pid))))
            except Exception:  # not supported on every board/driver: the free figure still counts them
                pass
            gpus.append(
                Gpu(
                    index=i,
                    name=name,
                    total=int(mem.total),
                    free=int(mem.free),
                    capability=(int(cap[0]), int(cap[1])),
                    processes=tuple(procs),
                )
            )
        return tuple(gpus)
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _visible_indices(count: int) -> list[int]:
    """Honour CUDA_VISIBLE_DEVICES when it lists plain indices, as every CUDA program does."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None or not re.fullmatch(r"[0-9,\s]*", env):
        return list(range(count))
    return [int(x) for x in env.split(",") if x.strip() and int(x) < count]


def _proc_name(pid: int) -> str:
    try:
        import psutil

        return psutil.Process(pid).name()
    except Exception:
        return ""


def probe_cpu() -> Cpu:
    import psutil

    vm = psutil.virtual_memory()
    return Cpu(total=int(vm.total), available=int(vm.available), cores=host_cores(), name=_cpu_name())


def host_cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def probe(nvml: Any = None) -> Inventory:
    """The real machine: its GPUs, or the CPU when there are none (then memoria runs vLLM's CPU build)."""
    gpus = probe_gpus(nvml)
    if gpus:
        return Inventory(gpus=gpus, source="nvml", cores=host_cores())
    cpu = probe_cpu()
    return Inventory(cpu=cpu, source="cpu", cores=cpu.cores, notes=("no NVIDIA GPU found: using the CPU engine",))


def inventory_for(spec: str | None) -> Inventory:
    """`--gpus SPEC` if given (or `cpu` for the CPU engine), else the real machine."""
    if spec is None:
        return probe()
    if spec.strip().lower() == "cpu":
        cpu = probe_cpu()
        return Inventory(cpu=cpu, source="cpu", cores=cpu.cores)
    return describe(spec)
