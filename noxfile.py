"""Lint, the test matrix (skorch x torch x wrapt), skorch's own test suite, and the build.

Each torch version gets one venv; the skorch releases sit side by side in it, each
in its own ``--target`` folder, and PYTHONPATH picks one per run. That keeps the
matrix to two torch installs and lets any test write a pickle with another skorch.
"""

from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "cluster", "build"]
nox.options.reuse_existing_virtualenvs = True

# test_activation.py builds venvs and worker pools: it runs once, on the newest torch.
# worksteal: a few tests start fresh interpreters and take seconds, the rest milliseconds.
# test_cluster.py needs dask and ray: the cluster session runs it.
MATRIX_ARGS = ["-n", "2", "--dist", "worksteal", "--ignore=tests/test_activation.py"]
MATRIX_ARGS += ["--ignore=tests/test_cluster.py"]
SKORCH = ["0.12.1", "0.14.0", "1.0.0", "1.1.0", "1.2.0", "1.3.1", "1.4.0"]
TORCH = ["2.5.1", "2.13.0"]
TEST_DEPS = ["pytest", "pytest-xdist", "numpy", "pandas", "hypothesis"]
# What skorch's own test_net.py needs that this project's tests don't.
SUITE_DEPS = ["flaky", "safetensors"]
SUITE = ["1.0.0", "1.1.0", "1.4.0"]  # skorch releases whose own test_net.py runs patched
# One release per generation of load paths (no torch_load_kwargs; ignored by __setstate__;
# plain-pickle blobs): the demo runs on these, with each torch. It starts a dozen interpreters.
DEMO = ["1.0.0", "1.1.0", "1.4.0"]
# skorch's own tests that can't pass here, by name, with the reason.
SUITE_DESELECT = {
    "test_load_cuda_params_to_cpu": "needs net_cuda.pt/optimizer_cuda.pt, not shipped in the wheel",
    "test_pickle_load": "needs net_cuda.pkl, not shipped in the wheel",
    "test_torch_load_kwargs_forwarded_to_torch_load": (
        "passes weights_only=123, which skorch-loadfix refuses with a TypeError"
    ),
}


def pins(skorch: str) -> list[str]:
    """What an old skorch needs beside it to import at all."""
    extra = []
    if skorch.startswith(("0.", "1.0")):  # '__sklearn_tags__' errors on scikit-learn >= 1.8
        extra.append("scikit-learn==1.5.2")
    if skorch.startswith(("0.12", "0.13")):  # imports pkg_resources
        extra.append("setuptools<82")
    return extra


def install_matrix(session: nox.Session, torch: str) -> dict[str, str]:
    """Install torch, this package and every skorch release; return each release's folder."""
    # Not cached: a torch with CUDA wheels would take its size again in pip's cache.
    session.install("--no-cache-dir", f"torch=={torch}")
    session.install(*TEST_DEPS, ".")
    root = Path(session.virtualenv.location) / "skorch-releases"
    folders = {}
    for skorch in SKORCH:
        folder = root / skorch
        if not folder.exists():
            session.install(
                "--no-deps", "--target", str(folder), f"skorch=={skorch}", *pins(skorch)
            )
        folders[skorch] = str(folder)
    return folders


@nox.session
@nox.parametrize("torch", TORCH)
def tests(session: nox.Session, torch: str) -> None:
    """The matrix on one torch; the newest also runs wrapt 1.x, activation and skorch's suite.

    Those share the newest torch's venv rather than each building one: a CI machine's disk
    is not always roomy, and the torch 2.5 venv alone takes 5.4 GB. Positional arguments go
    to the matrix's pytest runs only.
    """
    folders = install_matrix(session, torch)
    corpus = Path(session.create_tmp()) / "corpus"
    for folder in folders.values():
        session.run("python", "tests/write_corpus.py", str(corpus), env={"PYTHONPATH": folder})
    for skorch, folder in folders.items():
        session.log(f"skorch {skorch}, torch {torch}")
        env = {"PYTHONPATH": folder, "SKORCH_LOADFIX_CORPUS": str(corpus)}
        session.run("pytest", *MATRIX_ARGS, *session.posargs, env=env)
        if skorch in DEMO:
            session.run("python", "-m", "skorch_loadfix", "demo", env=env)
    if torch != TORCH[-1]:
        return
    session.install("wrapt~=1.17.0")  # on the release that needs the most patches
    session.log(f"skorch 1.0.0, torch {torch}, wrapt 1.17")
    env = {"PYTHONPATH": folders["1.0.0"], "SKORCH_LOADFIX_CORPUS": str(corpus)}
    session.run("pytest", *MATRIX_ARGS, *session.posargs, env=env)
    session.install("wrapt>=2")
    activation(session, folders)
    skorch_suite(session, folders)


def activation(session: nox.Session, folders: dict[str, str]) -> None:
    """The .pth, SKORCH_LOADFIX=1 in fresh venvs and worker pools, and the pytest plugin."""
    session.install("joblib")
    session.log(f"activation, skorch 1.1.0, torch {TORCH[-1]}")
    env = {"PYTHONPATH": folders["1.1.0"]}  # cross_validate fails there unpatched
    session.run("pytest", "-n", "2", "tests/test_activation.py", env=env)


def skorch_suite(session: nox.Session, folders: dict[str, str]) -> None:
    """skorch's own test_net.py, shipped in its wheel, with the patch applied."""
    session.install(*SUITE_DEPS)
    deselect = f"not ({' or '.join(SUITE_DESELECT)})"
    options = ["-q", "-n", "2", "--skorch-loadfix", "-p", "no:cacheprovider"]
    options += ["-W", "ignore::DeprecationWarning", "-k", deselect]
    for skorch in SUITE:
        session.log(f"skorch {skorch}'s own test_net.py, patched, torch {TORCH[-1]}")
        with session.chdir(folders[skorch]):
            env = {"PYTHONPATH": folders[skorch]}
            session.run("pytest", *options, "skorch/tests/test_net.py", env=env)


@nox.session
def cluster(session: nox.Session) -> None:
    """Real local Dask and Ray clusters, on the skorch where every unpatched load fails.

    A venv of its own: dask and ray stay out of the matrix, which must show the base
    install works without them. Serial: each cluster takes both cores itself.
    """
    session.install("--no-cache-dir", f"torch=={TORCH[-1]}")
    session.install("skorch==1.1.0", "scikit-learn", "joblib", "pytest", ".[dask,ray]")
    session.run("pytest", "-p", "no:cacheprovider", "--durations=5", "tests/test_cluster.py")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff", "mypy", "pytest", "torch==2.13.0", "wrapt", "packaging", "nox")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "skorch_loadfix", "_skorch_loadfix_pth.py", "noxfile.py")


@nox.session
def build(session: nox.Session) -> None:
    session.install("build", "twine")
    dist = session.create_tmp()
    session.run("python", "-m", "build", "--outdir", dist)
    session.run("twine", "check", "--strict", *Path(dist).glob("*"))
