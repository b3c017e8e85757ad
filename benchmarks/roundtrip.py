"""Pickle round trip of a small fitted net, patched vs unpatched skorch.

    python benchmarks/roundtrip.py [--runs 11] [--number 200] [--out FILE.md]

Each run starts two fresh interpreters, one per case, in turn. Each fits a 3-layer MLP
(20-64-64-1) in ``NeuralNetRegressor`` for one epoch on random data, applies the patch (or
not), checks that a copy predicts the same, then times ``pickle.loads(pickle.dumps(net))``
as timeit does: the best of 3 repeats of ``--number`` round trips, divided by ``--number``.
The writer is skorch's own either way, so the difference is the reader. The target is a
patched/unpatched ratio of medians <= 1.05. Uses the installed skorch.
"""

from __future__ import annotations

import argparse
import functools
import statistics
from pathlib import Path

from _common import (
    RESULTS,
    child_env,
    header,
    interleaved,
    ratio,
    run_child,
    spread,
    write_results,
)

TARGET = 1.05

ROUNDTRIP = """
import pickle, sys, timeit
import numpy as np, torch, skorch
from _common import report
patched, number = sys.argv[1] == "patched", int(sys.argv[2])
torch.manual_seed(0)
X = np.random.RandomState(0).randn(512, 20).astype("float32")
y = X[:, :1] * 2 + 1
module = torch.nn.Sequential(
    torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
    torch.nn.Linear(64, 1),
)
net = skorch.NeuralNetRegressor(module, max_epochs=1, verbose=0).fit(X, y)
if patched:
    import skorch_loadfix
    skorch_loadfix.apply()
assert np.array_equal(pickle.loads(pickle.dumps(net)).predict(X), net.predict(X))
timer = timeit.Timer(lambda: pickle.loads(pickle.dumps(net)))
timer.timeit(max(1, number // 10))
seconds = min(timer.repeat(repeat=3, number=number)) / number
applied = patched and skorch_loadfix.is_applied()
report({"seconds": seconds, "patched": applied, "skorch": skorch.__version__})
"""


def roundtrip(how: str, number: int) -> float:
    result = run_child(ROUNDTRIP, child_env(), [how, str(number)])
    if "error" in result:
        raise SystemExit(f"{how}: {result['error']}")
    assert result["patched"] == (how == "patched"), result
    return float(result["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--number", type=int, default=200, help="round trips per sample")
    parser.add_argument("--out", type=Path, default=RESULTS / "roundtrip.md")
    args = parser.parse_args()
    top = header()
    cases = {how: functools.partial(roundtrip, how, args.number) for how in ("plain", "patched")}
    times = interleaved(cases, args.runs)
    factor = ratio(times["patched"], times["plain"])
    paired = statistics.median(p / u for p, u in zip(times["patched"], times["plain"], strict=True))
    verdict = "meets" if factor <= TARGET else "MISSES"
    lines = [
        f"# Pickle round trip of a small fitted net\n\n{top}\n",
        f"{args.runs} interleaved runs, each a fresh interpreter timing {args.number} "
        "round trips (best of 3).\n",
        "| case | per round trip, ms: median (min–max) | ratio |",
        "| --- | --- | --- |",
        f"| unpatched | {spread(times['plain'], 1e3, 3)} | 1.000 |",
        f"| patched | {spread(times['patched'], 1e3, 3)} | {factor:.3f} |",
        "",
        f"patched/unpatched {factor:.3f}: {verdict} the target <= {TARGET}. Per-run ratios "
        f"(patched/unpatched of the same run): median "
        f"{paired:.3f}.",
    ]
    write_results("roundtrip", "\n".join(lines).rstrip(), args.out)


if __name__ == "__main__":
    main()
