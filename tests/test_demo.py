"""`k2 demo` end to end, from K2 installed as a wheel, outside the repository, on random free ports.

The demo starts the real local stack (Tansu broker, K2's registry, the landing service, the REST API)
as detached subprocesses, replays the real Binance capture through Kafka into Iceberg and checks every
landed trade against the source JSON; `k2 down` must then stop every part it started.

One run proves both what a checkout's `make demo` needs and what an installed K2 needs: the wheel is
built from this checkout's ``src`` (the same code the checkout runs), and the checkout's
``data/samples/binance`` is a symlink to the package data ``k2/sources/samples/binance``, so the
installed run reads the very same capture. It is the stricter of the two (no repository files, no
``PYTHONPATH``, cwd elsewhere), so running the demo (264 s at load ~25) a second time from the
checkout would prove nothing more. What only the checkout has is checked cheaply: the symlink itself.

The wheel is built from a copy of the sources (``pip wheel --no-deps``; the copy keeps build leftovers
out of the checkout) and installed with ``--no-deps`` into a fresh virtualenv under a temp dir outside
the repository. Installing K2's ~40 dependencies into every test venv would take minutes on a shared
machine, so the venv reuses the *dependencies* already installed in the interpreter running the tests:
a ``.pth`` file in the new venv lists that interpreter's site-packages. Python only follows ``.pth``
files of a venv's own site-packages, so the development install of K2 there (an editable ``.pth``
pointing at a checkout) is not followed: the venv imports K2 from the wheel only, which the test checks
before running anything.
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

from k2.telemetry.procs import free_port, pid_alive, port_open
from tests.support.stack import storage_port

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
    # No pip in the venv (ensurepip costs ~6 s of CPU): this interpreter's pip installs into it (--python).
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "k2_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def _environment(venv: Path, outside: Path) -> tuple[dict[str, str], dict[str, int]]:
    """No ``K2_*``/``PYTHONPATH`` from the caller; random ports, a fresh data dir, the venv first on PATH."""
    ports = {name: free_port() for name in ("BROKER", "REGISTRY", "API", "LANDING_METRICS", "PROMETHEUS")}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("K2_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    env.update({f"K2_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(
        {
            "K2_STORAGE_PORT": str(storage_port()),  # the demo's own SeaweedFS (keeps the broker's log)
            "K2_DATA_DIR": str(outside / "k2"),
            "K2_CONFIG_FILE": str(REPO / "tests" / "k2-test.toml"),  # deliberately empty
            "COLUMNS": "200",
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
        }
    )
    return env, ports


def _installed_python(venv: Path, code: str, env: dict[str, str], cwd: Path) -> str:
    ran = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def test_installed_demo_lands_the_capture_exactly_and_down_stops_the_stack(tmp_path: Path) -> None:
    # The checkout's samples are the package data (one capture, so the installed run covers the checkout's).
    assert (
        REPO / "data" / "samples" / "binance"
    ).resolve() == REPO / "src" / "k2" / "sources" / "samples" / "binance"
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "k2/sources/samples/binance/spot_btcusdt_20240808.gz" in names, (
        f"expected the capture in the wheel, found {names[:20]}..."
    )
    venv = _venv_with_wheel(tmp_path, wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert not str(outside).startswith(str(REPO))
    env, ports = _environment(venv, outside)
    where = _installed_python(venv, "import k2; print(k2.__file__)", env, outside)
    assert where.strip().startswith(str(venv)), f"expected K2 imported from the venv, found {where}"
    # The fake exchange's default captures and exchangeInfo are the package data of the installed wheel.
    probe = (
        "import json; from k2.sources import fake_exchange as f; "
        "print(json.dumps([str(p) for p in (*f.DEFAULT_BINANCE_CAPTURES, f.DEFAULT_EXCHANGE_INFO) if p.is_file()]))"
    )
    found = json.loads(_installed_python(venv, probe, env, outside) or "[]")
    assert len(found) == 3 and all(p.startswith(str(venv)) for p in found), found

    def k2(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "k2"), *args],
            env=env,
            cwd=outside,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    run_dir = outside / "k2" / "run"
    try:
        demo = k2(["demo", "--timeout", "240"], timeout=420)
        output = demo.stdout + demo.stderr
        assert demo.returncode == 0, output[-4000:]
        assert "19,904 distinct" in output, output[-4000:]
        assert re.search(r"mismatches against the source JSON: 0 ->\s+exact", output), output[-4000:]
        assert "1-minute OHLCV bars" in output and "Last 10 trades" in output and "Iceberg snapshot" in output
        assert f"research console: http://127.0.0.1:{ports['API']}/console/" in output  # issue 16
        assert "book matches the bookTicker" in output, output[-4000:]
        # The demo leaves the stack up: status reads it, and the parts listen on the configured ports.
        assert port_open("127.0.0.1", ports["BROKER"]) and port_open("127.0.0.1", ports["REGISTRY"])
        status = k2(["status", "--json"], timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "market_data.trades" in status.stdout
    finally:
        pids = [int(p.read_text().split()[0]) for p in run_dir.glob("*.pid")] if run_dir.exists() else []
        down = k2(["down"], timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert pids, "expected pid files for the parts the demo started"
    assert not [pid for pid in pids if pid_alive(pid)], "expected `k2 down` to stop every part"
