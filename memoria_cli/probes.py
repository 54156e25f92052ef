"""HTTP probes of the workers and the proxy: ready (health 200 and the model listed) and live."""

from __future__ import annotations

import json

import httpx

from memoria_cli.supervisor import Progress
from memoria_cli.worker_spec import ProcessSpec

# Counters of vLLM's /metrics that grow while its engine works (vllm/v1/metrics/loggers.py); their sum is the
# progress the supervisor watches. Requests in flight: the API server's own count (/load, with
# --enable-server-load-tracking), which a hung engine core cannot freeze.
PROGRESS_COUNTERS = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total")


def progress_total(metrics: str) -> float:
    """The sum of the progress counters over all their labels, from Prometheus' text format. Pure."""
    total = 0.0
    for line in metrics.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in PROGRESS_COUNTERS:
            try:
                total += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return total


class HttpProber:
    """Short timeouts: a probe that hangs is itself the answer (a hung server is not live)."""

    def __init__(self, keys: dict[str, str] | None = None, timeout: float = 5.0) -> None:
        self.client = httpx.Client(timeout=timeout, trust_env=False)
        self.keys = keys or {}  # a worker's own key (with auth, vLLM guards /v1/* with it)

    def ready(self, spec: ProcessSpec) -> bool:
        if not self._ok(spec.base_url + spec.ready_path):
            return False
        if spec.models_path and spec.served_name:
            try:
                key = self.keys.get(spec.name)
                headers = {"Authorization": f"Bearer {key}"} if key else None
                data = self.client.get(spec.base_url + spec.models_path, headers=headers).json()
                return spec.served_name in {m.get("id") for m in data.get("data", [])}
            except (httpx.HTTPError, ValueError, AttributeError):
                return False
        return True

    def live(self, spec: ProcessSpec) -> bool:
        return self._ok(spec.base_url + spec.live_path)

    def progress(self, spec: ProcessSpec) -> Progress | None:
        try:
            load = self.client.get(spec.base_url + "/load")
            metrics = self.client.get(spec.base_url + "/metrics")
            if load.status_code != 200 or metrics.status_code != 200:
                return None
            return Progress(in_flight=int(json.loads(load.text)["server_load"]), done=progress_total(metrics.text))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def _ok(self, url: str) -> bool:
        try:
            return self.client.get(url).status_code == 200
        except httpx.HTTPError:
            return False
