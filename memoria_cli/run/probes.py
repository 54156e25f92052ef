"""HTTP probes of the workers and the proxy: ready (health 200 and the model listed) and live."""

from __future__ import annotations

import json

import httpx

from memoria_cli.core.worker_spec import ProcessSpec
from memoria_cli.run.supervisor import Progress

# Series of vLLM's /metrics that move while its engine works (vllm/v1/metrics/loggers.py): token and request
# counters, and the KV cache usage, which moves with every prefill chunk (a long prompt's tokens are counted
# only once its prefill is done). The supervisor watches their sum change; all of them come from the engine
# core, so a hung one freezes them. Requests in flight: the API server's own count (/load, with
# --enable-server-load-tracking), which a hung engine core cannot freeze.
PROGRESS_SERIES = {
    "vllm:prompt_tokens_total": 1.0,
    "vllm:generation_tokens_total": 1.0,
    "vllm:request_success_total": 1.0,
    "vllm:kv_cache_usage_perc": 1e6,
}


def progress_total(metrics: str) -> float:
    """A weighted sum of the progress series over all their labels, from Prometheus' text format. Pure."""
    total = 0.0
    for line in metrics.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in PROGRESS_SERIES:
            try:
                total += float(line.rsplit(" ", 1)[1]) * PROGRESS_SERIES[name]
            except (IndexError, ValueError):
                continue
    return total


CONTROL_TIMEOUT = 120.0  # a level-2 wake reloads the weights; a wait-mode sleep lets requests in flight end


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

    def sleep(self, spec: ProcessSpec, level: int) -> bool:
        """vLLM's /sleep (served with VLLM_SERVER_DEV_MODE=1), after what is in flight (mode=wait: the default,
        abort, would cut it); True once /is_sleeping says so."""
        return self._control(spec, f"/sleep?level={level}&mode=wait", asleep=True)

    def wake(self, spec: ProcessSpec) -> bool:
        return self._control(spec, "/wake_up", asleep=False)

    def _control(self, spec: ProcessSpec, path: str, asleep: bool) -> bool:
        try:
            r = self.client.post(spec.base_url + path, timeout=CONTROL_TIMEOUT)
            if r.status_code != 200:
                return False
            return bool(self.client.get(spec.base_url + "/is_sleeping").json()["is_sleeping"]) is asleep
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return False

    def _ok(self, url: str) -> bool:
        try:
            return self.client.get(url).status_code == 200
        except httpx.HTTPError:
            return False
