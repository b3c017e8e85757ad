"""``python -m skorch_loadfix demo``: the bug and the fix, on the installed skorch and torch.

Every load runs in a fresh interpreter, so "unpatched" really is the installed
skorch as it ships, and a load that crashes cannot take the demo with it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap

_WRITE = """
import pickle
import torch
from skorch import NeuralNetClassifier
from skorch_loadfix.formats import WRITERS, dumps
from skorch_loadfix.demo_model import X, Model, y

net = NeuralNetClassifier(Model, optimizer=torch.optim.Adam, max_epochs=2, verbose=0)
net.fit(X, y)
for writer in WRITERS:
    with open(f"net-{writer}.pkl", "wb") as f:
        f.write(dumps(net, writer))
with open("expected.pkl", "wb") as f:
    pickle.dump(net.predict_proba(X), f)
"""

_LOAD = """
import pickle, sys, warnings
import numpy as np
import skorch_loadfix
from skorch_loadfix.demo_model import X

path, mode = sys.argv[1:]
if mode != "unpatched":
    skorch_loadfix.apply()
if mode == "applied, then reverted":
    skorch_loadfix.revert()
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    try:
        if mode == "patched, weights_only=True":
            with skorch_loadfix.torch_load_kwargs(weights_only=True):
                net = pickle.load(open(path, "rb"))
        else:
            net = pickle.load(open(path, "rb"))
    except Exception as exc:
        print(f"FAILS   {type(exc).__name__}: {str(exc).splitlines()[0][:90]}")
        sys.exit(1)
for warning in caught:
    if "weights_only" in str(warning.message):
        print(f"WARNS   {warning.category.__name__}: {str(warning.message)[:90]}")
        sys.exit(1)
same = np.allclose(net.predict_proba(X), pickle.load(open("expected.pkl", "rb")))
print("loads   predictions identical" if same else "loads   but predictions DIFFER")
sys.exit(0 if same else 1)
"""

MODES = ("unpatched", "patched", "patched, weights_only=True", "applied, then reverted")


def _run(code: str, *args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def main() -> int:
    """Print what each load does; exit 0 when every patched load works."""
    from .status import installed_version

    print(f"skorch {installed_version('skorch')}, torch {installed_version('torch')}\n")
    with tempfile.TemporaryDirectory() as tmp:
        written = _run(_WRITE, cwd=tmp)
        if written.returncode:
            print(written.stderr, file=sys.stderr)
            return 1
        print("A fitted NeuralNetClassifier (nested custom modules, Adam), pickled as")
        print(
            "skorch <= 1.1 writes it (blob by torch.save) and as skorch >= 1.2 does (by pickle).\n"
        )
        ok = True
        for writer in ("torch.save", "pickle"):
            print(f"file written with the blob by {writer}:")
            for mode in MODES:
                loaded = _run(_LOAD, f"net-{writer}.pkl", mode, cwd=tmp)
                line = loaded.stdout.strip() or f"CRASHES {loaded.stderr.strip().splitlines()[-1]}"
                print(f"  {mode:<28} {line}")
                ok &= loaded.returncode == 0 or not mode.startswith("patched")
            print()
    print("every patched load works" if ok else "a patched load FAILED: please report it")
    return 0 if ok else 1
