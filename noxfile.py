"""Lint, the test matrix (skorch x torch x wrapt), skorch's own test suites, and the build.

Each torch version gets one venv; the skorch releases sit side by side in it, each
in its own ``--target`` folder, and PYTHONPATH picks one per run. That keeps one
torch install per column and lets any test write a pickle with another skorch.

The CI plan (``.ci/run`` on a fresh 2-core machine: under 60 minutes, limited disk):

- ``tests(torch=...)``: on the reference torch (2.13.0, the CPU wheel CI has on disk) every
  skorch release runs every test module, the release-independent ones (the audit hook,
  the random programs, the unpickler's soundness rules) once on the newest skorch, then
  wrapt 1.17 and auto-activation.
  The other columns run the core modules (round trips, warnings, patches, kwargs, devices): every
  release on 2.5.1 (the last torch that warns about ``weights_only``), one release per
  load-path generation on the newest (2.14.1) and on the oldest (2.0.1, with 0.12.1 and the
  oldest scikit-learn, wrapt and packaging pyproject allows, so that one column tests every
  lower bound at once). The demo runs on the reference and the newest torch.
- ``suite``: skorch's own tests with ``--skorch-loadfix``: every module 1.4.0 ships,
  and ``test_net.py`` of 1.0.0 and 1.1.0.
- ``cluster``: real local Dask and Ray clusters (their own venv).
- Disk: with ``CI=true`` (``.ci/run`` sets it) a session deletes its venv when it
  ends, so the peak is the biggest single venv (torch 2.14.1's CUDA build, about
  6 GB) instead of their sum; torch never goes into pip's cache.

"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nox

# A list: sessions from elsewhere append their name.
nox.options.sessions = ["lint", "tests", "suite", "cluster", "build"]
nox.options.reuse_existing_virtualenvs = True

# worksteal: a few tests start fresh interpreters and take seconds, the rest milliseconds.
MATRIX_ARGS = ["-n", "2", "--dist", "worksteal"]
# Run once, on REFERENCE_TORCH: they test this package, not a skorch or torch release.
ONCE = [
    *("tests/test_hook.py", "tests/test_programs.py"),  # the audit hook, random programs
    *("tests/test_soundness.py", "tests/test_widened.py"),  # the restricted unpickler's rules
]
# test_activation.py builds venvs and worker pools (once, on REFERENCE_TORCH); test_cluster.py
# needs dask and ray (the cluster session).
ELSEWHERE = [*ONCE, "tests/test_activation.py", "tests/test_cluster.py"]
# On the reference torch, run only for one release per load-path generation: what a file holds
# and what load() reads of it (the zoo, containers, state, effects), messages and docs, whose
# outcome depends on the blob format a release writes, not on each release (CI's time).
PER_GENERATION = [
    *("tests/test_zoo.py", "tests/test_containers.py", "tests/test_state.py"),
    *("tests/test_effects.py", "tests/test_messages.py", "tests/test_docs.py"),
]
# What every column runs: round trips, warnings, patches, kwargs and devices on that torch.
CORE = [
    *("tests/test_loading.py", "tests/test_patching.py", "tests/test_kwargs.py"),
    "tests/test_devices.py",  # nets saved on a GPU, read on a CPU-only machine
]
SKORCH = ["0.12.1", "0.14.0", "1.0.0", "1.1.0", "1.2.0", "1.3.1", "1.4.0"]
# One release per generation of load paths (no torch_load_kwargs; ignored by __setstate__;
# plain-pickle blobs).
GENERATIONS = ["1.0.0", "1.1.0", "1.4.0"]
OLDEST_TORCH = "2.0.1"
REFERENCE_TORCH = "2.13.0"
NEWEST_TORCH = "2.14.1"
# The skorch releases tested on each torch; the keys are pyproject's torch range, tested.
COLUMNS = {
    OLDEST_TORCH: ["0.12.1", *GENERATIONS],
    "2.5.1": SKORCH,
    REFERENCE_TORCH: SKORCH,
    NEWEST_TORCH: GENERATIONS,
}
# The lower bounds in pyproject.toml, installed together on the oldest torch
# (pytest 9 needs packaging >= 24).
OLDEST_DEPS = ["scikit-learn==1.5.2", "wrapt==1.14.1", "packaging==20.0", "pytest<9"]
TEST_DEPS = ["pytest", "pytest-xdist", "hypothesis", "numpy", "pandas", "cloudpickle"]
# What skorch 1.4.0's own test modules import (its `testing` extra, less the hub ones), so
# that none of its tests skips for a missing package; sacred imports pkg_resources.
SUITE_DEPS = [
    *("flaky", "safetensors", "fire", "numpydoc", "matplotlib", "gpytorch", "tensorboard"),
    *("sacred", "setuptools<82", "wandb", "neptune", "mlflow"),
]
# mlflow >= 3.x refuses the file store skorch's MLflowLogger test uses, unless told.
SUITE_ENV = {"MLFLOW_ALLOW_FILE_STORE": "true"}
# skorch's own tests that can't run here, by node id prefix, with the reason.
SUITE_DESELECT = {
    "skorch/tests/test_net.py::TestNeuralNet::test_load_cuda_params_to_cpu[": (
        "needs net_cuda.pt/optimizer_cuda.pt, not shipped in the wheel"
    ),
    "skorch/tests/test_net.py::TestNeuralNet::test_pickle_load[": (
        "needs net_cuda.pkl, not shipped in the wheel"
    ),
    "skorch/tests/test_dataset.py::TestGetLen::test_get_len_transformers_tokenizer": (
        "downloads bert-base-uncased's tokenizer from the Hugging Face hub"
    ),
    "skorch/tests/test_dataset.py::TestNetWithTokenizers::": (
        "downloads bert-base-uncased's tokenizer from the Hugging Face hub"
    ),
}
# Whole modules of 1.4.0's suite left out, with the reason.
SUITE_IGNORE = {
    "skorch/tests/test_hf.py": "downloads tokenizers and models from the Hugging Face hub",
    "skorch/tests/llm": "downloads language models from the Hugging Face hub",
}


def pins(skorch: str) -> list[str]:
    """What an old skorch needs beside it to import at all."""
    extra = []
    if skorch.startswith(("0.", "1.0")):  # '__sklearn_tags__' errors on scikit-learn >= 1.8
        extra.append("scikit-learn==1.5.2")
    if skorch.startswith(("0.12", "0.13")):  # imports pkg_resources
        extra.append("setuptools<82")
    return extra


def torch_pins(torch: str) -> list[str]:
    """What an old torch needs beside it: torch < 2.3 was built against numpy 1."""
    return ["numpy<2"] if tuple(map(int, torch.split(".")[:2])) < (2, 3) else []


@contextmanager
def discarded_in_ci(session: nox.Session) -> Iterator[None]:
    """Delete the session's venv when it ends under CI, so venvs don't add up on disk."""
    try:
        yield
    finally:
        if os.environ.get("CI") == "true":
            session.log(f"CI: removing {session.virtualenv.location}")
            shutil.rmtree(session.virtualenv.location, ignore_errors=True)


def install_matrix(session: nox.Session, torch: str, releases: list[str]) -> dict[str, str]:
    """Install torch, this package and the skorch releases; return each release's folder."""
    # Not cached: a torch with CUDA wheels would take its size again in pip's cache.
    session.install("--no-cache-dir", f"torch=={torch}", *torch_pins(torch))
    session.install(*TEST_DEPS, *torch_pins(torch), ".")
    root = Path(session.virtualenv.location) / "skorch-releases"
    folders = {}
    for skorch in releases:
        folder = root / skorch
        if not folder.exists():
            session.install(
                "--no-deps", "--target", str(folder), f"skorch=={skorch}", *pins(skorch)
            )
        folders[skorch] = str(folder)
    return folders


@nox.session
@nox.parametrize("torch", list(COLUMNS))
def tests(session: nox.Session, torch: str) -> None:
    """One torch column; the reference torch runs every module, then wrapt 1.17 and activation.

    Positional arguments go to the matrix's pytest runs only.
    """
    reference = torch == REFERENCE_TORCH
    ignored = [f"--ignore={path}" for path in ELSEWHERE]
    modules = [*ignored, "tests"] if reference else CORE
    with discarded_in_ci(session):
        folders = install_matrix(session, torch, COLUMNS[torch])
        if torch == OLDEST_TORCH:
            session.install(*OLDEST_DEPS)
        corpus = Path(session.create_tmp()) / "corpus"
        for folder in folders.values():
            session.run("python", "tests/write_corpus.py", str(corpus), env={"PYTHONPATH": folder})
        for skorch, folder in folders.items():
            session.log(f"skorch {skorch}, torch {torch}")
            env = {"PYTHONPATH": folder, "SKORCH_LOADFIX_CORPUS": str(corpus)}
            skipped = [] if skorch in GENERATIONS else [f"--ignore={p}" for p in PER_GENERATION]
            session.run("pytest", *MATRIX_ARGS, *session.posargs, *skipped, *modules, env=env)
            if skorch in GENERATIONS and (reference or torch == NEWEST_TORCH):
                session.run("python", "-m", "skorch_loadfix", "demo", env=env)
        if reference:
            env = {"PYTHONPATH": folders["1.4.0"]}
            session.log(f"once: {', '.join(ONCE)}, skorch 1.4.0, torch {torch}")
            session.run("pytest", *MATRIX_ARGS, *session.posargs, *ONCE, env=env)
            session.install("wrapt~=1.17.0")  # on the release that needs the most patches
            session.log(f"skorch 1.0.0, torch {torch}, wrapt 1.17")
            env = {"PYTHONPATH": folders["1.0.0"], "SKORCH_LOADFIX_CORPUS": str(corpus)}
            session.run("pytest", *MATRIX_ARGS, *session.posargs, *CORE, env=env)
            session.install("wrapt>=2")
            activation(session, folders)


def activation(session: nox.Session, folders: dict[str, str]) -> None:
    """The .pth, SKORCH_LOADFIX=1 in fresh venvs and worker pools, and the pytest plugin."""
    session.install("joblib")
    session.log(f"activation, skorch 1.1.0, torch {REFERENCE_TORCH}")
    env = {"PYTHONPATH": folders["1.1.0"]}  # cross_validate fails there unpatched
    session.run("pytest", "-n", "2", "tests/test_activation.py", env=env)


@nox.session
def suite(session: nox.Session) -> None:
    """skorch's own tests, shipped in its wheels, with the patch applied.

    All of 1.4.0's modules; ``test_net.py`` of 1.0.0 and 1.1.0, whose own pickling
    tests fail unpatched on torch >= 2.6.
    """
    with discarded_in_ci(session):
        folders = install_matrix(session, REFERENCE_TORCH, GENERATIONS)
        session.install(*SUITE_DEPS)
        # --rootdir: node ids relative to the release's folder, as --deselect spells them (else
        # they start from this project's pyproject.toml, above it, and nothing is deselected).
        options = ["-q", "-n", "2", "--skorch-loadfix", "-p", "no:cacheprovider", "-rfEs"]
        options += ["--rootdir", "."]
        options += ["-W", "ignore::DeprecationWarning"]
        options += [f"--deselect={test}" for test in SUITE_DESELECT]
        for skorch in GENERATIONS:  # 1.4.0, the longest, last
            if skorch == "1.4.0":
                modules = ["skorch/tests", *(f"--ignore={path}" for path in SUITE_IGNORE)]
            else:
                modules = ["skorch/tests/test_net.py"]
            session.log(f"skorch {skorch}'s own {modules[0]}, patched, torch {REFERENCE_TORCH}")
            with session.chdir(folders[skorch]):
                env = {"PYTHONPATH": folders[skorch], **SUITE_ENV}
                session.run("pytest", *options, *modules, env=env)


@nox.session
def cluster(session: nox.Session) -> None:
    """Real local Dask and Ray clusters, on the skorch where every unpatched load fails.

    A venv of its own: dask and ray stay out of the matrix, which must show the base
    install works without them. Serial: each cluster takes both cores itself.
    """
    with discarded_in_ci(session):
        session.install("--no-cache-dir", f"torch=={REFERENCE_TORCH}")
        session.install("skorch==1.1.0", "scikit-learn", "joblib", "pytest", ".[dask,ray]")
        session.run("pytest", "-p", "no:cacheprovider", "--durations=5", "tests/test_cluster.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy, and the docs check: links resolve, and README's Python blocks run for real
    (so this session installs torch, the newest skorch and this package)."""
    with discarded_in_ci(session):
        session.install("ruff", "mypy", "pytest", f"torch=={REFERENCE_TORCH}")
        session.install("wrapt", "packaging", "nox", "skorch", "numpy", ".")
        session.run("ruff", "check", ".")
        session.run("ruff", "format", "--check", ".")
        session.run("mypy", "skorch_loadfix", "_skorch_loadfix_pth.py", "noxfile.py", "tools")
        session.run("python", "tools/check_docs.py")
        session.run("pytest", "-p", "no:cacheprovider", "-q", "tests/test_docs.py")


@nox.session
def build(session: nox.Session) -> None:
    with discarded_in_ci(session):
        session.install("build", "twine")
        dist = session.create_tmp()
        session.run("python", "-m", "build", "--outdir", dist)
        session.run("twine", "check", "--strict", *Path(dist).glob("*"))
