"""K2 installed from a wheel, not checked out: ``k2 demo`` finds its capture in the package data.

The test builds a wheel from a copy of the sources (``pip wheel --no-deps``; the copy keeps build
leftovers out of the checkout), creates a fresh virtualenv under a temp dir outside the repository and
installs the wheel into it with ``--no-deps``. Installing K2's ~40 dependencies into every test venv
would take minutes on a shared machine, so the venv reuses the *dependencies* already installed in the
interpreter running the tests: a ``.pth`` file in the new venv lists that interpreter's site-packages.
Python only follows ``.pth`` files of a venv's own site-packages, so the development install of K2
there (an editable ``.pth`` pointing at a checkout) is not followed: the venv imports K2 from the wheel
only, which the test checks before running anything. ``k2 demo`` then runs from a cwd outside the
repository, on random ports, with no ``PYTHONPATH``, and must land the 19,904 trades exactly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from k2.telemetry.procs import free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("k2_lakehouse-*.whl")
    return wheel


def _venv_with_wheel(tmp_path: Path, wheel: Path) -> Path:
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "k2_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_installed_wheel_runs_the_demo_from_outside_the_repository(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "k2/sources/samples/binance/spot_btcusdt_20240808.gz" in names, (
        f"expected the capture in the wheel, found {names[:20]}..."
    )
    venv = _venv_with_wheel(tmp_path, wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("K2_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    env.update(
        {
            f"K2_{name}_PORT": str(free_port())
            for name in ("BROKER", "REGISTRY", "API", "LANDING_METRICS", "PROMETHEUS")
        }
    )
    env.update(
        {
            "K2_DATA_DIR": str(outside / "k2"),
            "COLUMNS": "200",
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
        }
    )

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import k2; print(k2.__file__)"], env=env, cwd=outside,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert where.stdout.strip().startswith(str(venv)), (
        f"expected K2 imported from the venv, found {where.stdout}{where.stderr}"
    )
    assert not str(outside).startswith(str(REPO))
    # The fake exchange's default captures and exchangeInfo are the package data of the installed wheel.
    probe = (
        "import json; from k2.sources import fake_exchange as f; "
        "print(json.dumps([str(p) for p in (*f.DEFAULT_BINANCE_CAPTURES, f.DEFAULT_EXCHANGE_INFO) if p.is_file()]))"
    )
    fake = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        env=env,
        cwd=outside,
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = json.loads(fake.stdout or "[]")
    assert len(found) == 3 and all(p.startswith(str(venv)) for p in found), fake.stdout + fake.stderr
    k2_bin = str(venv / "bin" / "k2")
    try:
        demo = subprocess.run(
            [k2_bin, "demo", "--timeout", "240"],
            env=env,
            cwd=outside,
            capture_output=True,
            text=True,
            timeout=420,
        )
        output = demo.stdout + demo.stderr
        assert demo.returncode == 0, output[-4000:]
        assert "19,904 distinct" in output, output[-4000:]
        assert re.search(r"mismatches against the source JSON: 0 ->\s+exact", output), output[-4000:]
    finally:
        down = subprocess.run(
            [k2_bin, "down"], env=env, cwd=outside, capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stdout + down.stderr
