"""`memoria service` (the systemd unit, rendered and checked by systemd's own verifier; install, refuse,
uninstall on a machine without systemd, as here and in CI) and shell completion (the completers, and the
scripts driven by a real bash and by the zsh and fish protocols)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from memoria_cli.core.service_unit import HEADER, UnitSpec, stop_timeout, systemctl_line, unit_text
from tests.helpers import DEFAULT_RUNTIMES, run_memoria, run_state

KEY = "sk-service-test-0b5e"


def spec(tmp_path: Path, **over) -> UnitSpec:
    base = {
        "python": sys.executable,
        "profile": "demo",
        "home": tmp_path / "my home",
        "runtimes": tmp_path / "rt",
        "system": False,
    }
    return UnitSpec(**{**base, **over})


def test_the_unit_runs_up_in_the_foreground_under_the_whole_control_group(tmp_path):
    text = unit_text(spec(tmp_path, env_file=tmp_path / "service.env", grace=20))
    lines = text.splitlines()
    assert lines[0] == HEADER
    assert f"ExecStart={sys.executable} -m memoria_cli up --profile demo" in lines
    assert f'Environment="MEMORIA_HOME={tmp_path}/my home"' in lines  # quoted: a space in a path
    assert "Environment=MEMORIA_SERVICE=user:memoria.service" in lines
    assert f"EnvironmentFile={tmp_path}/service.env" in lines
    for line in ("Type=simple", "Restart=on-failure", "KillMode=control-group", "TimeoutStopSec=70"):
        assert line in lines
    assert lines[-1] == "WantedBy=default.target" and "User=" not in text
    system = unit_text(spec(tmp_path, system=True, user="alice"))
    assert "User=alice" in system and system.endswith("WantedBy=multi-user.target\n")
    assert "EnvironmentFile" not in system and stop_timeout(15) == 60
    assert systemctl_line("user:memoria.service", "restart") == "systemctl --user restart memoria.service"
    assert systemctl_line("system:memoria.service", "start") == "systemctl start memoria.service"


@pytest.mark.medium
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_verifies_the_unit(tmp_path):
    """systemd's own reading of the unit: syntax, directives, the ExecStart binary (Debian's systemd in CI)."""
    runtime = tmp_path / "runtime"  # a user manager's runtime folder (none without a login session)
    runtime.mkdir(mode=0o700)

    def verify(unit: Path, system: bool) -> tuple[int, list[str]]:
        r = subprocess.run(
            ["systemd-analyze", *([] if system else ["--user"]), "verify", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        )
        return r.returncode, [ln for ln in (r.stdout + r.stderr).splitlines() if "memoria.service" in ln]

    for system in (False, True):
        folder = tmp_path / ("system" if system else "user")
        folder.mkdir()
        unit = folder / "memoria.service"
        unit.write_text(unit_text(spec(tmp_path, system=system, user="root" if system else None)))
        assert verify(unit, system) == (0, [])
        unit.write_text(unit.read_text().replace("KillMode=control-group", "KillMode=groups"))
        assert "Failed to parse kill mode" in " ".join(verify(unit, system)[1])  # the verifier does read it


@pytest.mark.medium
def test_install_status_uninstall_without_systemd(tmp_path):
    """Here systemd is not the init: the unit is written and the command says how to enable it; the key goes
    to a 0600 file, never into the unit; a unit memoria did not write is never replaced or removed."""
    env = {
        "MEMORIA_HOME": str(tmp_path / "home"),
        "MEMORIA_RUNTIMES": str(DEFAULT_RUNTIMES),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "LITELLM_MASTER_KEY": KEY,
    }
    unit = tmp_path / "config" / "systemd" / "user" / "memoria.service"
    r = run_memoria("service", "install", "-p", "demo", env=env)
    assert r.returncode == 0, r.stderr
    assert f"wrote {unit}" in r.stderr and "systemctl --user enable --now memoria.service" in r.stderr
    text = unit.read_text()
    assert KEY not in text and "ExecStart=" in text and "--profile demo" in text
    key_file = tmp_path / "home" / "service.env"
    assert key_file.read_text() == f"LITELLM_MASTER_KEY={KEY}\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    status = run_memoria("service", "status", env=env)
    assert status.returncode == 0 and f"installed at {unit}" in status.stderr and "stack: not running" in status.stderr
    assert run_memoria("service", "uninstall", env=env).returncode == 0
    assert not unit.exists() and not key_file.exists()
    assert run_memoria("service", "uninstall", env=env).returncode == 8  # nothing there: NotRunning
    unit.write_text("[Service]\nExecStart=/bin/true\n")  # the user's own unit of that name
    r = run_memoria("service", "install", env=env)
    assert r.returncode == 6 and "memoria did not write it" in r.stderr and "Traceback" not in r.stderr
    assert run_memoria("service", "uninstall", env=env).returncode == 6 and unit.exists()
    assert unit.read_text() == "[Service]\nExecStart=/bin/true\n"
    r = run_memoria("service", "install", "-p", "no-such-profile", env=env)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    no_key = {k: v for k, v in env.items() if k != "LITELLM_MASTER_KEY"}
    unit.unlink()
    assert run_memoria("service", "install", "--system", env=no_key).returncode == (0 if os.geteuid() == 0 else 3)
    Path("/etc/systemd/system/memoria.service").unlink(missing_ok=True) if os.geteuid() == 0 else None


def test_up_refuses_politely_when_the_service_runs_the_stack(tmp_path, monkeypatch):
    from dataclasses import replace

    from memoria_cli.core.errors import PreflightError
    from memoria_cli.core.home import Home
    from memoria_cli.run.lock import acquire_lock, refuse_if_running, release_lock
    from memoria_cli.run.state import write_state

    home = Home(tmp_path / "home", tmp_path / "rt")
    fd = acquire_lock(home)  # the service's supervisor holds the home's lock (this process, here)
    try:
        me = psutil.Process()
        state = replace(run_state(supervisor=(me.pid, me.create_time())), service="user:memoria.service")
        write_state(home.state_file, state)
        with pytest.raises(PreflightError) as e:
            refuse_if_running(home)
        assert e.value.line() == (
            "memoria already runs here as the systemd service memoria.service: "
            "`memoria service status` shows it; `systemctl --user restart memoria.service` restarts it"
        )
        write_state(home.state_file, replace(state, service=""))
        with pytest.raises(PreflightError, match="already running"):
            refuse_if_running(home)
    finally:
        release_lock(fd)


# --- completion ------------------------------------------------------------------------------------------


@pytest.fixture
def running(tmp_path, monkeypatch):
    """A home whose state.json lists two workers (with aliases) and the proxy."""
    from memoria_cli.run.state import write_state

    monkeypatch.setenv("MEMORIA_HOME", str(tmp_path / "home"))
    procs = {
        "demo-embed": {"kind": "embedding", "aliases": ["sentence-transformers/all-MiniLM-L6-v2"]},
        "demo-chat": {"kind": "chat", "aliases": ["HuggingFaceTB/SmolLM2-135M-Instruct"]},
        "proxy": {"kind": "proxy"},
    }
    write_state(tmp_path / "home" / "state.json", run_state(processes=procs))
    (tmp_path / "home" / "logs").mkdir()
    for n in ("demo-chat", "proxy", "supervisor"):
        (tmp_path / "home" / "logs" / f"{n}.log").write_text("")
    return tmp_path / "home"


def test_the_completers_offer_what_is_there(running, tmp_path, monkeypatch):
    from memoria_cli.cli import completion

    assert completion.processes("") == ["demo-embed", "demo-chat", "proxy"]
    assert completion.processes("demo-c") == ["demo-chat"]
    assert completion.logs("") == ["demo-chat", "proxy", "supervisor"]
    assert completion.models("Hugging") == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert completion.models("demo") == ["demo-embed", "demo-chat"]
    assert {"default", "demo"} <= set(completion.profiles(""))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("")
    assert completion.profiles("mi") == ["mine.yaml"]
    assert completion.profiles(f"{tmp_path}/m") == [f"{tmp_path}/mine.yaml"]
    monkeypatch.setenv("MEMORIA_HOME", "")  # a broken environment offers nothing, and raises nothing
    assert completion.processes("") == [] and completion.logs("") == []


@pytest.mark.medium
def test_a_real_bash_completes_worker_names_from_the_running_stack(running):
    script = run_memoria("completion", "bash", check=True).stdout
    assert "complete -o default -F _memoria_completion memoria" in script
    ask = 'COMP_WORDS=({}); COMP_CWORD={}; _memoria_completion memoria; echo "${{COMPREPLY[*]}}"\n'
    bash = (
        script
        + "\n"
        + "".join(
            ask.format(w, c) for w, c in [("memoria restart demo-", 2), ("memoria st", 1), ("memoria up -p de", 3)]
        )
    )
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the script runs `memoria` (the venv's)
    r = subprocess.run(
        ["bash", "-c", bash], capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": path}
    )
    assert r.stdout.splitlines() == ["demo-embed demo-chat", "status", "default demo"], r.stderr


@pytest.mark.medium
@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_get_the_same_answers_by_their_protocol(running, shell):
    """What the zsh and fish scripts run on Tab (typer's protocol), without the shells themselves."""
    script = run_memoria("completion", shell, check=True).stdout
    assert "_MEMORIA_COMPLETE=complete_" + shell in script
    env = {"_MEMORIA_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": "memoria logs demo-"}
    if shell == "fish":
        env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    r = run_memoria(env=env)
    assert r.returncode == 0 and "demo-chat" in r.stdout and "demo-embed" not in r.stdout, r.stdout + r.stderr
    r = run_memoria("completion", "tcsh")
    assert r.returncode == 3 and "give one of: bash, zsh, fish" in r.stderr
