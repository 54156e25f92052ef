"""HTTP probes of the workers and the proxy: ready (health 200 and the model listed) and live."""

from __future__ import annotations

import httpx

from memoria_cli.worker_spec import ProcessSpec


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

    def _ok(self, url: str) -> bool:
        try:
            return self.client.get(url).status_code == 200
        except httpx.HTTPError:
            return False
