"""Where memoria keeps its state, logs, generated config and runtimes: one home per user (MEMORIA_HOME)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    root: Path
    runtimes: Path

    @classmethod
    def from_env(cls) -> Home:
        env = os.environ.get("MEMORIA_HOME")
        if env is not None and not env.strip():
            # a script's unset variable must not mean the default home: `down` there stops the real stack
            from memoria_cli.core.errors import InputError

            raise InputError("MEMORIA_HOME is set but empty", "unset it to use the default home, or give a folder")
        if env:
            root = Path(env).expanduser()
        else:
            import platformdirs

            root = Path(platformdirs.user_data_dir("memoria", appauthor=False))
        runtimes = Path(os.environ.get("MEMORIA_RUNTIMES", root / "runtimes")).expanduser()
        return cls(root=root.resolve(), runtimes=runtimes.resolve())

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def proxy_config(self) -> Path:
        return self.root / "litellm.yaml"

    @property
    def cache(self) -> Path:
        """vLLM's compile cache and the like; private to memoria so runs do not leak into ~/.cache."""
        return self.root / "cache"

    @property
    def vllm_site(self) -> Path:
        """Named by CPU workers' PYTHONPATH: holds memoria_cli/plugins/vllm_hooks.py as sitecustomize.py."""
        return self.root / "vllm-site"

    @property
    def marker(self) -> str:
        """A tag put in every child's environment so its processes can be found and swept, and only ours."""
        return hashlib.sha256(str(self.root).encode()).hexdigest()[:12]

    def log_for(self, name: str) -> Path:
        return self.logs / f"{name}.log"
