"""`up -d` and its detached supervisor talk in data: the plan shown is the plan run (handed over, not planned
again), and the supervisor's failure comes back as the same error with the same exit code."""

from __future__ import annotations

import pytest

from memoria_cli.core.errors import PreflightError, StartError
from memoria_cli.core.home import Home
from memoria_cli.core.inventory import describe
from memoria_cli.core.planner import plan
from memoria_cli.core.profile import load_profile
from memoria_cli.run.detach import (
    Handoff,
    clean,
    failure_file,
    read_failure,
    read_handoff,
    write_failure,
    write_handoff,
)
from memoria_cli.run.state import RunState
from tests.helpers import run_memoria, run_state


@pytest.fixture
def a_home(tmp_path) -> Home:
    return Home(root=tmp_path / "home", runtimes=tmp_path / "rt")


def gpu_plan():
    prof = load_profile("default")
    from memoria_cli.core.model_facts import read_facts

    return plan(prof, describe("L4"), {m.name: read_facts(m) for m in prof.models})


def test_the_plan_handed_over_is_the_plan_shown(a_home):
    shown = gpu_plan()
    path = write_handoff(a_home, Handoff(profile="/p/default.yaml", plan=shown))
    assert path.stat().st_mode & 0o777 == 0o600
    got = read_handoff(path)
    assert got == Handoff(profile="/p/default.yaml", plan=shown)  # every figure, the GMUs to the 4th decimal


def test_a_failure_comes_back_as_the_same_error(a_home):
    path = write_handoff(a_home, Handoff(profile="x", plan=gpu_plan()))
    assert read_failure(path) is None
    write_failure(path, PreflightError("port 8200 (for proxy) is taken by nginx", "stop that process"))
    error = read_failure(path).error()
    assert (type(error), error.exit_code, error.line()) == (
        PreflightError,
        6,
        "port 8200 (for proxy) is taken by nginx: stop that process",
    )
    clean(path)
    assert not path.exists() and not failure_file(path).exists()


def test_run_state_round_trips_with_its_plan():
    state = run_state(processes={"a": {"pid": 7, "create_time": 1.5, "devices": [0], "kind": "chat"}})
    back = RunState.from_dict(state.to_dict())
    assert back == state
    with pytest.raises(ValueError, match="unknown layout"):
        RunState.from_dict({**state.to_dict(), "processes": {"a": {"state": "ready", "port": "8301"}}})
    # a field of another memoria version (a supervisor started before an upgrade) is not corruption
    newer = {**state.to_dict(), "processes": {"a": {"state": "ready", "port": 8301, "later_field": 1}}}
    assert RunState.from_dict(newer).processes["a"].port == 8301


@pytest.mark.medium
def test_the_supervisor_refuses_a_bad_handoff_as_data(tmp_path):
    bad = tmp_path / "handoff-x.json"
    bad.write_text("{not json")
    r = run_memoria("_supervise", "--handoff", str(bad), env={"MEMORIA_HOME": str(tmp_path / "home")})
    assert r.returncode == 3 and "cannot read the plan handed over" in r.stderr
    assert read_failure(bad).exit_code == 3
    assert StartError.exit_code == 7  # what `up` says when nothing came back (documented in README)
