"""state.json: what the supervisor runs, for `status`, `logs`, `down` in any other process. Read and written
here only, as typed records.

Written atomically on every change. A process recorded here is ours only if its pid AND create_time still
match (pids are reused). A corrupt file is set aside, never trusted, and the caller rebuilds from what runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

from memoria_cli.core.plan import Plan
from memoria_cli.run.files import write_atomic

STATE_VERSION = 2
Phase = Literal["starting", "running", "stopping", "stopped", "failed"]
PHASES: tuple[Phase, ...] = ("starting", "running", "stopping", "stopped", "failed")
ENDED: tuple[Phase, ...] = ("stopped", "failed")


@dataclass
class ProcessRecord:
    """One supervised process as the supervisor last saw it (times are wall-clock)."""

    state: str
    port: int
    kind: str = "proxy"
    reason: str = ""
    pid: int | None = None
    create_time: float | None = None
    devices: list[int] = field(default_factory=list)
    restarts: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    log: str = ""
    aliases: list[str] = field(default_factory=list)
    note: str | None = None
    model: str | None = None
    memory: int | None = None  # what its processes hold (run/usage.py: per GPU, or resident on the CPU), sampled
    rank: int | None = None  # a span's rank (0 serves the model; the others are headless)
    run: str = ""  # this run of its process, "pid:create_time": how the other ranks of its span know it
    joined: str = ""  # a span's later rank: the run of the first host's rank it was started to join
    flags: dict[str, str] = field(default_factory=dict)  # a span's rank: WorkerPlan.stage_flags

    @property
    def alive(self) -> bool:
        return is_ours(self.pid, self.create_time)


@dataclass(frozen=True)
class SupervisorRecord:
    pid: int
    create_time: float
    started_at: float


@dataclass(frozen=True)
class RunState:
    phase: Phase
    supervisor: SupervisorRecord
    plan: Plan
    processes: dict[str, ProcessRecord]
    profile: str = ""
    profile_path: str = ""
    url: str = ""
    auth: bool = False
    engine: str = "cpu"
    marker: str = ""
    updated_at: float = 0.0
    service: str = ""  # the systemd unit that runs this supervisor ("" when `memoria up` does)

    @property
    def supervisor_alive(self) -> bool:
        return is_ours(self.supervisor.pid, self.supervisor.create_time)

    @property
    def ended(self) -> bool:
        return self.phase in ENDED

    def workers(self) -> dict[str, ProcessRecord]:
        return {n: p for n, p in self.processes.items() if p.kind != "proxy"}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plan"] = self.plan.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """The state read back; ValueError for any other shape (a reader must never crash on one)."""
        try:
            phase = data["phase"]
            if phase not in PHASES:
                raise ValueError(f"phase {phase!r}")
            procs = {str(n): _process(p) for n, p in _dict(data["processes"]).items()}
            return cls(
                phase=cast(Phase, phase),
                supervisor=SupervisorRecord(**_dict(data["supervisor"])),
                plan=Plan.from_dict(_dict(data["plan"])),
                processes=procs,
                profile=_str(data.get("profile", "")),
                profile_path=_str(data.get("profile_path", "")),
                url=_str(data.get("url", "")),
                auth=data.get("auth") is True,
                engine=_str(data.get("engine", "cpu")),
                marker=_str(data.get("marker", "")),
                updated_at=float(data.get("updated_at", 0.0)),
                service=_str(data.get("service", "")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"unknown layout: {exc}") from None


def _dict(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"expected an object, got {type(v).__name__}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _process(p: Any) -> ProcessRecord:
    """A record back; fields this version does not know are dropped (a supervisor of another memoria version
    may run while the package is upgraded: its state is not corrupt for that)."""
    known = {f.name for f in fields(ProcessRecord)}
    rec = ProcessRecord(**{k: v for k, v in _dict(p).items() if k in known})
    if not isinstance(rec.state, str) or type(rec.port) is not int:
        raise TypeError("state and port")
    if rec.pid is not None and type(rec.pid) is not int:
        raise TypeError("pid")
    return rec


def read_state(path: Path) -> tuple[RunState | None, str | None]:
    """(state or None, a note when a corrupt file was set aside)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path}: {exc}"
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("unknown layout")
        return RunState.from_dict(data), None
    except (ValueError, UnicodeDecodeError):
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            path.rename(aside)
        except OSError:
            return None, f"{path} is corrupt and could not be moved aside"
        return None, f"{path} was corrupt: set aside as {aside.name}"


def write_state(path: Path, state: RunState) -> None:
    body = {**state.to_dict(), "version": STATE_VERSION, "updated_at": time.time()}
    write_atomic(path, json.dumps(body, indent=2))


def is_ours(pid: int | None, create_time: float | None) -> bool:
    """True only if `pid` runs and started when we recorded: a reused pid is someone else's process."""
    if not pid or create_time is None:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        # A killed process whose parent never reaps it stays a zombie: dead, whatever its pid says.
        return abs(proc.create_time() - create_time) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def supervisor_alive(state: RunState | None) -> bool:
    return state is not None and state.supervisor_alive
