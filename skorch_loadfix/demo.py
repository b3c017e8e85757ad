"""``python -m skorch_loadfix demo``: the bug and the fix, on the installed skorch and torch.

The unpatched loads run in a fresh interpreter, so they really are the installed
skorch as it ships; the patched ones in another, which reverts at the end to show
that revert() brings the original behaviour back.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

from .formats import WRITERS

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
import contextlib, pickle, sys, warnings
import numpy as np
import skorch_loadfix
from skorch_loadfix.demo import first_sentence
from skorch_loadfix.demo_model import X
from skorch_loadfix.formats import WRITERS


def load(path, mode):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with contextlib.ExitStack() as stack:
                if mode == "patched, weights_only=True":
                    stack.enter_context(skorch_loadfix.torch_load_kwargs(weights_only=True))
                net = pickle.load(open(path, "rb"))
        except Exception as exc:
            return f"FAILS   {type(exc).__name__}: {first_sentence(str(exc))}"
    for warning in caught:
        if "weights_only" in str(warning.message):
            return f"WARNS   {warning.category.__name__}: {first_sentence(str(warning.message))}"
    same = np.allclose(net.predict_proba(X), pickle.load(open("expected.pkl", "rb")))
    return "loads   predictions identical" if same else "loads   but predictions DIFFER"


def report(mode):
    for writer in WRITERS:
        print(writer, mode, load(f"net-{writer}.pkl", mode), sep="\t")


if sys.argv[1] == "unpatched":
    report("unpatched")
else:  # the rest in one interpreter, in order: revert() must bring the bug back
    skorch_loadfix.apply()
    report("patched")
    report("patched, weights_only=True")
    skorch_loadfix.revert()
    report("applied, then reverted")
"""

MODES = ("unpatched", "patched", "patched, weights_only=True", "applied, then reverted")
WORKS = "loads   predictions identical"
NEXT_STEP = (
    "Next step: call skorch_loadfix.apply() before you load, or set SKORCH_LOADFIX=1 for "
    "every process; README.md's 'Which do I need?' says which."
)
NOTHING_TO_FIX = (
    "Unpatched, this skorch loads both formats on this torch. Next step: use "
    "skorch_loadfix.load() for files you don't trust, or upgrade for old files."
)
REPORT = "A patched load FAILED. Next step: report it, with the output above, as an issue."


def first_sentence(text: str) -> str:
    """The first sentence of an error, whole: a line cut at a fixed width ends mid-word."""
    line = text.strip().split("\n", 1)[0]
    end = line.find(". ")
    return line if end < 0 else line[: end + 1]


def _run(code: str, *args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
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
        outcomes = {}  # (writer, mode) -> line
        for interpreter in ("unpatched", "patched"):
            loaded = _run(_LOAD, interpreter, cwd=tmp)
            if loaded.returncode:
                print(loaded.stderr, file=sys.stderr)
                return 1
            for line in loaded.stdout.splitlines():
                writer, mode, outcome = line.split("\t")
                outcomes[writer, mode] = outcome
        for writer in WRITERS:
            print(f"file written with the blob by {writer}:")
            for mode in MODES:
                print(f"  {mode:<28} {outcomes[writer, mode]}")
            print()
    ok = all(
        outcome.startswith(WORKS)
        for (_, mode), outcome in outcomes.items()
        if mode.startswith("patched")
    )
    needed = any(outcomes[writer, "unpatched"] != WORKS for writer in WRITERS)
    print(f"Every patched load works.\n{NEXT_STEP if needed else NOTHING_TO_FIX}" if ok else REPORT)
    return 0 if ok else 1
