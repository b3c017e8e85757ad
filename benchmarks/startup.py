"""Interpreter start-up cost of skorch_loadfix.pth, as ratios to an interpreter without it.

    python benchmarks/startup.py [--runs 200] [--out benchmarks/results/startup.md]

Builds two venvs alike but for skorch-loadfix, installed in one with --no-deps (so
only its .pth and code). Runs are interleaved, each a fresh
``python -c pass``, so a noisy machine slows all three alike.
"""

import argparse
import functools
import os
import subprocess
import tempfile
import time
import venv
from pathlib import Path

from _common import RESULTS, header, interleaved, ratio, spread, write_results

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
    parser.add_argument("--out", type=Path, default=RESULTS / "startup.md")
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if k != "SKORCH_LOADFIX"}
    with tempfile.TemporaryDirectory() as tmp:
        bare = make_venv(Path(tmp, "bare"), install=False)
        installed = make_venv(Path(tmp, "installed"), install=True)
        cases = {
            "not installed": (bare, base_env),
            "installed, SKORCH_LOADFIX unset": (installed, base_env),
            "installed, SKORCH_LOADFIX=1": (installed, {**base_env, "SKORCH_LOADFIX": "1"}),
        }
        starts = {name: functools.partial(start, *case) for name, case in cases.items()}
        times = interleaved(starts, args.runs)
        check = "import sys; print('torch' in sys.modules or 'wrapt' in sys.modules)"
        heavy = subprocess.run(
            [installed, "-c", check],
            env=cases["installed, SKORCH_LOADFIX=1"][1],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    lines = [
        f"# Interpreter start-up with skorch_loadfix.pth\n\n{header()}\n",
        f"{args.runs} interleaved runs of `python -c pass`.\n",
        "| case | ms: median (min–max) | ratio |",
        "| --- | --- | --- |",
    ]
    for name, samples in times.items():
        factor = ratio(samples, times["not installed"])
        lines.append(f"| {name} | {spread(samples, 1e3)} | {factor:.3f} |")
    lines.append(f"\nSKORCH_LOADFIX=1 without skorch imports torch or wrapt: {heavy}")
    write_results("startup", "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
