"""`memoria down` on the real stack leaves no process and frees every port. It downs the session's shared
stack (tests/conftest.py `tiny_stack`) after every other test that uses it: the `last` marker moves it to the
end of the run, so the stack is checked after its whole life of requests, kills and restarts, and no second
four-worker stack is started for it (that took ~3.5 min)."""

from __future__ import annotations

import json
import os
import socket

import psutil
import pytest

from memoria_cli.run.processes import marked
from tests.helpers import run_memoria

pytestmark = [pytest.mark.slow, pytest.mark.last]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_down_leaves_nothing_on_the_real_stack(tiny_stack):
    s = json.loads(run_memoria("status", "--json", env=tiny_stack["env"]).stdout)
    groups = [p["pid"] for p in s["processes"].values()]
    assert len(marked(s["marker"])) >= 9  # 4 API servers + their engine cores + the proxy
    r = run_memoria("down", env=tiny_stack["env"], timeout=180)
    tiny_stack["downed"] = True  # the fixture's own `down` at the end is then not needed
    assert r.returncode == 0, r.stderr
    assert marked(s["marker"]) == []
    for pgid in groups:  # zombies hold no memory and no port; they wait for an init that reaps
        assert not [p for p in psutil.process_iter() if _pgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE]
    for p in s["processes"].values():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", p["port"]))
