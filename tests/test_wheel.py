"""The wheel is usable as a wheel: it carries every package and the shipped profiles."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.medium  # starts processes: a runtime's python, the CLI, a build

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "memoria_cli").rglob("__init__.py")}
    assert found | {"memoria_cli.profiles"} == listed


def test_the_built_wheel_has_its_profiles_and_loads_them(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("memoria-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    shipped = {p.name for p in (ROOT / "profiles").glob("*.yaml")}
    assert {f"memoria_cli/profiles/{n}" for n in shipped} <= names
    assert "memoria_cli/plugins/status_page.html" in names  # the proxy serves it at /ui
    code = (
        "import memoria_cli, memoria_cli.core.profile as p; print(memoria_cli.__file__); "
        "print(sorted(x.stem for x in p.shipped_profiles())); p.load_profile('default')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    where, profiles = r.stdout.splitlines()
    assert where.startswith(str(tmp_path / "site"))  # the wheel's copy, not the checkout's
    assert profiles == str(sorted(n.removesuffix(".yaml") for n in shipped))
