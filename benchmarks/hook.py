"""What the audit hook (skorch_loadfix.safe.hook) costs: idle, and during load().

    python benchmarks/hook.py [--runs 7] [--skorch-dir FOLDER]
        [--out benchmarks/results/hook.md]

Idle: a fresh interpreter times audited calls unrelated to loading (exec of a compiled line
alone; and a round of open and close os.devnull, compile and exec a line, os.listdir, import
of a cached module), fastest of 7 timeit repeats, once with the hook installed (a guarded
block entered and left first) and once without. The hook is then one Python function call
per audit event that returns on its first test.

load(): a fresh interpreter writes nothing; it loads a NeuralNetRegressor(Linear) pickled by
the installed skorch, once untimed, then times five loads and keeps the fastest; with the
hook, and with ``guarding`` replaced by a no-op (the control). Weights: 16 KiB and 64 MiB.
Runs are interleaved; ratios are to the case without the hook. No timed assertions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, child_env, header, interleaved, ratio, run_child, spread, write_results

IDLE = """
import os, sys, timeit
from _common import report
hooked = sys.argv[1] == "1"
if hooked:
    from skorch_loadfix.safe.hook import guarding
    with guarding("installing"):
        pass
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

report({
    name: min(timeit.repeat(func, number=number, repeat=7)) / number
    for name, func, number in [("exec", one_event, 20000), ("round", round_of_five, 2000)]
})
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
path, hooked = sys.argv[1], sys.argv[2] == "1"
if not hooked:
    hook.guarding = sites.guarding = lambda where: contextlib.nullcontext()
data = open(path, "rb").read()
skorch_loadfix.load(io.BytesIO(data))
times = []
for _ in range(5):
    began = time.perf_counter()
    skorch_loadfix.load(io.BytesIO(data))
    times.append(time.perf_counter() - began)
report({"seconds": min(times)})
"""

IDLE_CASES = {  # fastest of 7 timeit repeats in each child; no guarded load running
    "exec": "idle: exec of a compiled line (1 audit event), per call",
    "round": "idle: open, compile, exec, exec, os.listdir, cached import (5 events), per round",
}
SIZES = {"16 KiB": 64, "64 MiB": 4096}  # n of an n x n float32 weight


def seconds(code: str, env: dict[str, str], args: list[str], key: str = "seconds") -> float:
    result = run_child(code, env, args)
    if "error" in result:
        raise SystemExit(f"benchmark child failed: {result['error']}")
    return float(result[key])


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

    cases = {}
    for hooked in ("1", "0"):
        for idle in IDLE_CASES:
            cases[(idle, hooked)] = lambda i=idle, h=hooked: seconds(IDLE, env, [h], i)
    with tempfile.TemporaryDirectory() as folder:
        for size, n in SIZES.items():
            path = str(Path(folder) / f"{n}.pkl")
            written = run_child(WRITE, env, [str(n), path])
            if "error" in written:
                raise SystemExit(f"writing the {size} net failed: {written['error']}")
            for hooked in ("1", "0"):
                cases[(size, hooked)] = lambda a=[path, hooked]: seconds(LOAD, env, a)
        samples = interleaved(cases, options.runs)

    rows = [
        "| workload | with the hook | without | ×without |",
        "| --- | --- | --- | --- |",
    ]
    for workload in [*IDLE_CASES, *SIZES]:
        with_hook, without = samples[(workload, "1")], samples[(workload, "0")]
        name = IDLE_CASES.get(workload, f"load() of a net with {workload} of weights, fastest of 5")
        scale, unit = (1e6, "µs") if workload in IDLE_CASES else (1.0, "s")
        rows.append(
            f"| {name} | {spread(with_hook, scale, 3)} {unit} | {spread(without, scale, 3)} {unit} "
            f"| {ratio(with_hook, without):.3f} |"
        )
    text = "\n".join(
        [
            "# What the audit hook costs",
            "",
            header(),
            "",
            f"{options.runs} interleaved runs, each a fresh interpreter; median (min–max).",
            "",
            *rows,
        ]
    )
    write_results("hook", text, options.out)


if __name__ == "__main__":
    sys.exit(main())
