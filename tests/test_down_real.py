"""`memoria down` on the real stack leaves no process and frees every port (its own short-lived stack, so the
shared one keeps serving the other tests)."""

from __future__ import annotations

import json
import os
import socket

import psutil
import pytest

from memoria_cli.run.processes import marked
from tests.helpers import build_tiny_models, free_ports, run_memoria, tiny_models_profile

pytestmark = pytest.mark.slow


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_down_leaves_nothing_on_the_real_stack(tmp_path, home):
    models = build_tiny_models()
    base = free_ports(5)
    profile = tiny_models_profile(tmp_path / "tiny.yaml", models, base)
    r = run_memoria("up", "-d", "-p", str(profile), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(run_memoria("status", "--json").stdout)
    groups = [p["pid"] for p in s["processes"].values()]
    assert len(marked(s["marker"])) >= 9  # 4 API servers + their engine cores + the proxy
    r = run_memoria("down", timeout=180)
    assert r.returncode == 0, r.stderr
    assert marked(s["marker"]) == []
    for pgid in groups:  # zombies hold no memory and no port; they wait for an init that reaps
        assert not [p for p in psutil.process_iter() if _pgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE]
    for p in s["processes"].values():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", p["port"]))
