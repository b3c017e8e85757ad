"""Helpers shared by the benchmark scripts; standard library only, so children import it cheaply.

Children are fresh interpreters (``sys.executable``) whose ``PYTHONPATH`` picks a skorch
release and this folder; each prints one JSON line last, which ``run_child`` returns.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"
MIB = 1 << 20
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


# --- inside a child -------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """A ``Vm*`` field of ``/proc/self/status`` (VmRSS, VmHWM, ...) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so imports' peaks don't count."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def report(result: Mapping[str, Any]) -> None:
    """What a child prints last: one JSON line for ``run_child``."""
    print(json.dumps(result), flush=True)


# --- in the parent --------------------------------------------------------------------------


def child_env(skorch_dir: str | None = None, **extra: str) -> dict[str, str]:
    """The parent's environment, minus SKORCH_LOADFIX, with skorch_dir and this folder first."""
    env = {k: v for k, v in os.environ.items() if k not in ("SKORCH_LOADFIX", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (skorch_dir, str(HERE)) if p)
    return {**env, **extra}


def run_child(code: str, env: Mapping[str, str], args: Iterable[str] = ()) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; its last JSON line, or ``{"error": ...}``."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {last}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def interleaved(cases: Mapping[K, Callable[[], T]], runs: int) -> dict[K, list[T]]:
    """Call every case once per run, in turn, so a noisy machine slows all of them alike."""
    samples: dict[K, list[T]] = {name: [] for name in cases}
    for run in range(runs):
        if sys.stderr.isatty():
            print(f"\r  run {run + 1}/{runs}", end="", file=sys.stderr, flush=True)
        for name, case in cases.items():
            samples[name].append(case())
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return samples


def spread(samples: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``median (min–max)`` of samples times scale."""
    low, mid, high = (scale * x for x in (min(samples), statistics.median(samples), max(samples)))
    return f"{mid:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def ratio(samples: list[float], reference: list[float]) -> float:
    return statistics.median(samples) / statistics.median(reference)


def skorch_dirs(versions: Iterable[str], given: Iterable[str]) -> dict[str, str | None]:
    """Where each skorch release lives: None for the installed one, else a folder for PYTHONPATH.

    ``given`` holds ``VERSION=PATH`` overrides (``--skorch-dir``); other releases are installed
    with pip into ``benchmarks/.cache/skorch-VERSION`` once, with scikit-learn 1.5.2 for
    skorch <= 1.0 (whose code newer scikit-learn breaks).
    """
    overrides = dict(item.split("=", 1) for item in given)
    try:
        installed: str | None = importlib.metadata.version("skorch")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    dirs: dict[str, str | None] = {}
    for version in versions:
        if version in overrides:
            dirs[version] = overrides[version]
        elif version == installed:
            dirs[version] = None
        else:
            dirs[version] = str(_install_skorch(version))
    return dirs


def _install_skorch(version: str) -> Path:
    target = CACHE / f"skorch-{version}"
    if not (target / "skorch").is_dir():
        wanted = [f"skorch=={version}"]
        if tuple(int(part) for part in version.split(".")[:2]) <= (1, 0):
            wanted.append("scikit-learn==1.5.2")
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target"]
        subprocess.run([*pip, str(target), *wanted], check=True)
    return target


def commit() -> str:
    """This checkout's commit, and whether its code has uncommitted changes."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE.parent)

    found = git("rev-parse", "--short", "HEAD")
    if found.returncode != 0:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--", ".", ":!benchmarks/results").stdout.strip()
    return found.stdout.strip() + (" with uncommitted changes" if dirty else "")


def header(skorch_versions: Iterable[str] = ()) -> str:
    """One line: machine, Python, torch, skorch and skorch_loadfix, date."""
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    skorch = ", ".join(skorch_versions) or _version("skorch")
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()}; "
        f"Python {platform.python_version()}, torch {_version('torch')}, "
        f"skorch {skorch}, skorch-loadfix {commit()}; "
        f"{datetime.date.today().isoformat()}"
    )


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def write_results(name: str, text: str, out: Path | None = None) -> Path:
    """Print ``text`` and save it to ``out`` (default ``benchmarks/results/<name>.md``)."""
    print(text)
    path = out or RESULTS / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path
