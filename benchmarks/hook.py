"""What the audit hook (skorch_loadfix.safe.hook) costs: idle, and during load().

    python benchmarks/hook.py [--runs 7] [--skorch-dir FOLDER]
        [--out benchmarks/results/hook.md]

Idle: a fresh interpreter times audited calls unrelated to loading (exec of a compiled line
alone; and a round of open and close os.devnull, compile and exec a line, os.listdir, import
of a cached module), fastest of 7 timeit repeats, without the hook, then installs it (a
guarded block entered and left) and times them again. The hook is then one Python function
call per audit event that returns on its first test.

load(): a fresh interpreter loads a NeuralNetRegressor(Linear) pickled by the installed
skorch once untimed, then five times with the hook and five with ``guarding`` replaced by a
no-op (the control), alternating, and keeps the fastest of each. Weights: 16 KiB and 64 MiB.
Both cases run in the same interpreter, as this machine's noise between interpreters is
larger than the hook; runs are interleaved. No timed assertions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, child_env, header, interleaved, run_child, spread, write_results

IDLE = """
import os, sys, timeit
from _common import report
import json  # the round's import finds it cached: the event-free path import takes most often
code = compile("x = 1", "<bench>", "exec")

def one_event():
    exec(code)

def round_of_five():
    open(os.devnull).close()
    exec(compile("x = 1", "<bench>", "exec"))
    exec(code)
    os.listdir("/")
    __import__("json")

def fastest():
    return {
        name: min(timeit.repeat(func, number=number, repeat=7)) / number
        for name, func, number in [("exec", one_event, 20000), ("round", round_of_five, 2000)]
    }

without = fastest()
from skorch_loadfix.safe.hook import guarding
with guarding("installing"):  # installs the hook, for good
    pass
report({"without": without, "with": fastest()})
"""

WRITE = """
import pickle, sys
import torch, skorch
from _common import report
n, path = int(sys.argv[1]), sys.argv[2]
net = skorch.NeuralNetRegressor(
    torch.nn.Linear, module__in_features=n, module__out_features=n, module__bias=False
).initialize()
with open(path, "wb") as file:
    pickle.dump(net, file)
report({})
"""

LOAD = """
import contextlib, io, sys, time
import skorch_loadfix
from skorch_loadfix import sites
from skorch_loadfix.safe import hook
from _common import report
data = open(sys.argv[1], "rb").read()
guarding = {"with": hook.guarding, "without": lambda where: contextlib.nullcontext()}
skorch_loadfix.load(io.BytesIO(data))
times = {"with": [], "without": []}
for _ in range(5):
    for case, guard in guarding.items():
        hook.guarding = sites.guarding = guard
        began = time.perf_counter()
        skorch_loadfix.load(io.BytesIO(data))
        times[case].append(time.perf_counter() - began)
report({case: {"seconds": min(found)} for case, found in times.items()})
"""

IDLE_CASES = {  # fastest of 7 timeit repeats in each child; no guarded load running
    "exec": "idle: exec of a compiled line (1 audit event), per call",
    "round": "idle: open, compile, exec, exec, os.listdir, cached import (5 events), per round",
}
SIZES = {"16 KiB": 64, "64 MiB": 4096}  # n of an n x n float32 weight


def child(code: str, env: dict[str, str], args: list[str]) -> dict[str, dict[str, float]]:
    """One fresh interpreter's fastest times, "with" the hook and "without" it."""
    result = run_child(code, env, args)
    if "error" in result:
        raise SystemExit(f"benchmark child failed: {result['error']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "hook.md")
    parser.add_argument("--skorch-dir", help="a folder holding skorch; default: the installed one")
    options = parser.parse_args()
    env = child_env(
        options.skorch_dir
    )  # this checkout's skorch_loadfix first, whatever is installed
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), env["PYTHONPATH"]]
    )

    cases = {"idle": lambda: child(IDLE, env, [])}
    with tempfile.TemporaryDirectory() as folder:
        for size, n in SIZES.items():
            path = str(Path(folder) / f"{n}.pkl")
            written = run_child(WRITE, env, [str(n), path])
            if "error" in written:
                raise SystemExit(f"writing the {size} net failed: {written['error']}")
            cases[size] = lambda path=path: child(LOAD, env, [path])
        samples = interleaved(cases, options.runs)

    rows = [
        "| workload | with the hook | without | ×without, per interpreter |",
        "| --- | --- | --- | --- |",
    ]
    for workload in [*IDLE_CASES, *SIZES]:
        runs = samples["idle" if workload in IDLE_CASES else workload]
        key = workload if workload in IDLE_CASES else "seconds"
        with_hook = [run["with"][key] for run in runs]
        without = [run["without"][key] for run in runs]
        ratios = [h / w for h, w in zip(with_hook, without, strict=True)]
        name = IDLE_CASES.get(workload, f"load() of a net with {workload} of weights, fastest of 5")
        scale, unit = (1e6, "µs") if workload in IDLE_CASES else (1.0, "s")
        rows.append(
            f"| {name} | {spread(with_hook, scale, 3)} {unit} | {spread(without, scale, 3)} {unit} "
            f"| {spread(ratios)} |"
        )
    text = "\n".join(
        [
            "# What the audit hook costs",
            "",
            header(),
            "",
            f"{options.runs} interleaved runs, each a fresh interpreter that measures both cases; "
            "median (min–max) over runs.",
            "",
            *rows,
        ]
    )
    write_results("hook", text, options.out)


if __name__ == "__main__":
    sys.exit(main())
