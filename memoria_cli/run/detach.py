"""The hand-over between `up -d` and the detached supervisor it starts, as data in two private files.

`up` plans, shows the plan, and writes it to a hand-off file; the supervisor runs that very plan (it does not
plan again: the GPUs' free memory may have moved in between). If the supervisor fails before its workers
report anything, it writes its error (message, hint, exit code) beside the hand-off for `up` to raise.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from memoria_cli.core.errors import MemoriaError, error_for
from memoria_cli.core.home import Home
from memoria_cli.core.plan import Plan
from memoria_cli.run.files import write_atomic


@dataclass(frozen=True)
class Handoff:
    profile: str  # the profile's file: the supervisor loads it again for the workers' settings
    plan: Plan
    host: str | None = None  # `up --as NAME`: this host's share of a cluster profile


@dataclass(frozen=True)
class Failure:
    message: str
    hint: str | None
    exit_code: int

    def error(self) -> MemoriaError:
        return error_for(self.exit_code, self.message, self.hint)


def write_handoff(home: Home, handoff: Handoff) -> Path:
    path = home.root / "run" / f"handoff-{secrets.token_hex(6)}.json"
    write_atomic(path, json.dumps({"profile": handoff.profile, "plan": handoff.plan.to_dict(), "host": handoff.host}))
    return path


def read_handoff(path: Path) -> Handoff:
    from memoria_cli.core.errors import InputError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        host = data.get("host")
        return Handoff(str(data["profile"]), Plan.from_dict(data["plan"]), str(host) if host else None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the plan handed over at {path}: {exc}", "start with `memoria up -d`") from None


def failure_file(handoff: Path) -> Path:
    return handoff.with_name(handoff.stem + ".failure.json")


def write_failure(handoff: Path, exc: MemoriaError) -> None:
    write_atomic(failure_file(handoff), json.dumps(asdict(Failure(exc.message, exc.hint, exc.exit_code))))


def read_failure(handoff: Path) -> Failure | None:
    try:
        data = json.loads(failure_file(handoff).read_text(encoding="utf-8"))
        return Failure(str(data["message"]), data.get("hint"), int(data["exit_code"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clean(handoff: Path) -> None:
    handoff.unlink(missing_ok=True)
    failure_file(handoff).unlink(missing_ok=True)
