"""The other hosts' ranks of this host's spans, looked at every couple of seconds for the supervisor, which
restarts a span as one group (run/supervisor.py `observe`).

Each other host of a span is asked for its ranks (plugins/ops.py `/ui/api/ranks` on its memoria proxy, with
the cluster's key) from a thread of its own: a host that does not answer costs the supervisor's loop nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx

from memoria_cli.core.cluster import WATCH_INTERVAL, WATCH_TIMEOUT
from memoria_cli.plugins.ops import RANKS
from memoria_cli.run.supervisor import RankView

Views = dict[str, RankView | None]  # host -> its rank of one span; None: its memoria did not answer


def views_of(peers: dict[str, str], docs: dict[str, dict[str, Any] | None], name: str) -> Views:
    """Span `name`'s ranks on `peers` (host -> base URL) from what each base answered (None: nothing). A host
    that answers without the rank runs none of it now ("absent"). Pure."""
    out: Views = {}
    for host, base in peers.items():
        doc = docs.get(base)
        if doc is None:
            out[host] = None
            continue
        r = (doc.get("ranks") or {}).get(name)
        out[host] = (
            RankView(str(r.get("state", "")), str(r.get("run", "")), str(r.get("joined", "")), _strings(r.get("flags")))
            if isinstance(r, dict)
            else RankView("absent", "", "")
        )
    return out


def _strings(d: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in d.items()} if isinstance(d, dict) else {}


def ask(base: str, key: str | None, timeout: float = WATCH_TIMEOUT) -> dict[str, Any] | None:
    """One host's ranks, or None when it does not answer in time (or not with its ranks)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(base + RANKS, headers=headers, timeout=timeout)
        doc = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


class GroupWatch:
    """Looks at the other ranks of each span every `interval` seconds; `take` hands over the newest looks."""

    def __init__(
        self,
        peers: dict[str, dict[str, str]],
        key: str | None,
        interval: float = WATCH_INTERVAL,
        asker: Callable[[str, str | None], dict[str, Any] | None] = ask,
    ) -> None:
        self.peers, self.key, self.interval, self.asker = peers, key, interval, asker
        self._new: dict[str, Views] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def look(self) -> None:
        bases = sorted({b for hosts in self.peers.values() for b in hosts.values()})
        docs = {b: self.asker(b, self.key) for b in bases}
        with self._lock:
            for name, hosts in self.peers.items():
                self._new[name] = views_of(hosts, docs, name)

    def take(self) -> dict[str, Views]:
        with self._lock:
            new, self._new = self._new, {}
        return new

    def start(self) -> None:
        if not self.peers or self._thread is not None:
            return

        def run() -> None:
            while not self._stop.is_set():
                self.look()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="memoria-groups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
