"""Interpreter start-up cost of skorch_loadfix.pth, as ratios to an interpreter without it.

    python benchmarks/startup.py [--runs 200]

Builds two venvs alike but for skorch-loadfix, installed in one with --no-deps (so
only its .pth and code). Runs are interleaved, each a fresh
``python -c pass``, so a noisy machine slows all three alike.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def make_venv(root: Path, install: bool) -> str:
    venv.create(root, with_pip=True)  # both alike, but for the package
    python = str(root / "bin" / "python")
    if install:
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--no-deps", str(PROJECT)], check=True
        )
    return python


def start(python: str, env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    runs = parser.parse_args().runs
    base_env = {k: v for k, v in os.environ.items() if k != "SKORCH_LOADFIX"}
    with tempfile.TemporaryDirectory() as tmp:
        bare = make_venv(Path(tmp, "bare"), install=False)
        installed = make_venv(Path(tmp, "installed"), install=True)
        cases = {
            "not installed": (bare, base_env),
            "installed, SKORCH_LOADFIX unset": (installed, base_env),
            "installed, SKORCH_LOADFIX=1": (installed, {**base_env, "SKORCH_LOADFIX": "1"}),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, (python, env) in cases.items():
                times[name].append(start(python, env))
        check = "import sys; print('torch' in sys.modules or 'wrapt' in sys.modules)"
        heavy = subprocess.run(
            [installed, "-c", check],
            env=cases["installed, SKORCH_LOADFIX=1"][1],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    baseline = statistics.median(times["not installed"])
    print(f"Python {sys.version.split()[0]}, {runs} interleaved runs of `python -c pass`")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"  {name:<34} median {median * 1e3:6.2f} ms  "
            f"(min {min(samples) * 1e3:.2f}, max {max(samples) * 1e3:.2f})  "
            f"ratio {median / baseline:.3f}"
        )
    print(f"  SKORCH_LOADFIX=1 without skorch imports torch or wrapt: {heavy}")


if __name__ == "__main__":
    main()
