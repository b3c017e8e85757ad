"""Unpickling a big fitted net: time and peak-RSS rise, patched vs unpatched skorch.

    python benchmarks/loading.py [--sizes 1 16 64 256 512] [--runs 5] [--quick]
        [--skorch-dir 1.1.0=/path/to/folder ...] [--configs NAME ...]
        [--out benchmarks/results/loading.md]

For each weight size (MiB), skorch 1.4.0 writes ``NeuralNetRegressor(Linear,
module__in_features=n, module__out_features=n, module__bias=False)``, initialized, with
n*n*4 bytes as close to the size as a square allows, in both blob formats (``pickle``, as
skorch >= 1.2 writes, and ``torch.save``, as skorch <= 1.1 does), the same net with
``joblib.dump`` (uncompressed, and gzip-compressed), plus its ``state_dict`` with
``torch.save``. Each measurement is a fresh interpreter that imports torch and skorch (and
applies the patch, if patched), resets its peak RSS, then times ``pickle.load``
(``joblib.load`` for a joblib file; or ``skorch_loadfix.load``, or
``torch.load(weights_only=True)`` for the state_dict, the floor) and reads VmHWM: the rise
is VmHWM minus the RSS before loading. The check confirms the loaded weight is a plain,
contiguous, writable CPU tensor with the saved bytes, owning its storage, and (for a net)
still the optimizer's parameter. Runs are interleaved (run 1 of every cell, then run 2,
...); a cell that raised once is not run again. Ratios are to upstream skorch 1.4.0
(unpatched) loading the pickle-format file of the same size. Missing skorch releases are
pip-installed once into benchmarks/.cache/.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    MIB,
    RESULTS,
    child_env,
    header,
    interleaved,
    ratio,
    run_child,
    skorch_dirs,
    spread,
    write_results,
)

WRITE = """
import sys, zlib
import joblib, torch, skorch
from skorch_loadfix import formats
from _common import report
n, folder = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
net = skorch.NeuralNetRegressor(
    torch.nn.Linear, module__in_features=n, module__out_features=n, module__bias=False
).initialize()
for writer in formats.WRITERS:
    with open(f"{folder}/{writer}.pkl", "wb") as file:
        file.write(formats.dumps(net, writer))
joblib.dump(net, f"{folder}/joblib.pkl")
joblib.dump(net, f"{folder}/joblib-gzip.pkl", compress=("gzip", 3))
torch.save(net.module_.state_dict(), f"{folder}/state_dict.pt")
report({"crc": zlib.crc32(net.module_.weight.detach().numpy()), "skorch": skorch.__version__})
"""

LOAD = """
import pickle, sys, time, zlib
from _common import report, reset_peak_rss, status_kib
how, path, crc = sys.argv[1], sys.argv[2], int(sys.argv[3])
import torch, skorch
if how in ("patched", "load"):
    import skorch_loadfix
if how == "patched":
    skorch_loadfix.apply()
reset_peak_rss()
before = status_kib("VmRSS")
try:
    began = time.perf_counter()
    if how == "state_dict":
        loaded = torch.load(path, weights_only=True)
    elif how == "load":
        loaded = skorch_loadfix.load(path)
    elif "joblib" in path:
        import joblib
        loaded = joblib.load(path)
    else:
        with open(path, "rb") as file:
            loaded = pickle.load(file)
    seconds = time.perf_counter() - began
except Exception as error:
    report({"error": type(error).__name__, "message": str(error)[:300]})
    raise SystemExit(0)
rise = status_kib("VmHWM") - before

def check():
    if how == "state_dict":
        weight = loaded["weight"]
    else:
        weight = loaded.module_.weight
        if loaded.optimizer_.param_groups[0]["params"][0] is not weight:
            return "the optimizer holds another tensor"
    data = weight.data
    if type(data) is not torch.Tensor or data.device.type != "cpu" or not data.is_contiguous():
        return f"unusual tensor {type(data).__name__} on {data.device}"
    if data.untyped_storage().nbytes() != data.numel() * data.element_size():
        return "weight views a larger buffer"
    if zlib.crc32(data.numpy()) != crc:
        return "weights differ from the saved ones"
    first = data[0].clone()
    data.add_(1)
    return "ok" if torch.equal(data[0], first + 1) else "not writable"

report({
    "seconds": seconds, "rise_mib": rise / 1024, "check": check(),
    "skorch": skorch.__version__, "patched": how == "patched" and skorch_loadfix.is_applied(),
})
"""


@dataclass(frozen=True)
class Config:
    name: str
    skorch: str
    how: str  # "plain", "patched", "load" (skorch_loadfix.load, unpatched) or "state_dict"
    formats: tuple[str, ...] = ("pickle", "torch.save")


JOBLIB = ("joblib", "joblib gzip")
CONFIGS = (
    Config("upstream 1.4.0", "1.4.0", "plain", ("pickle", "torch.save", *JOBLIB)),
    Config("1.4.0 patched", "1.4.0", "patched"),
    Config("1.1.0 patched", "1.1.0", "patched"),
    Config("1.0.0 patched", "1.0.0", "patched"),
    Config("1.1.0 unpatched", "1.1.0", "plain"),
    Config("1.4.0 skorch_loadfix.load()", "1.4.0", "load", ("pickle", "torch.save", *JOBLIB)),
    Config("1.1.0 skorch_loadfix.load()", "1.1.0", "load"),
    Config("torch.load(weights_only=True) of the state_dict", "1.4.0", "state_dict", ("-",)),
)
REFERENCE = ("upstream 1.4.0", "pickle")
FILES = {"pickle": "pickle.pkl", "torch.save": "torch.save.pkl", "-": "state_dict.pt"}
FILES |= {"joblib": "joblib.pkl", "joblib gzip": "joblib-gzip.pkl"}


@dataclass
class Cell:
    """One configuration loading one file; remembers a failure so it is not run again."""

    config: Config
    fmt: str
    env: dict[str, str]
    path: Path
    crc: int
    failure: dict[str, Any] | None = field(default=None)

    def __call__(self) -> dict[str, Any]:
        if self.failure:
            return self.failure
        args = [self.config.how, str(self.path), str(self.crc)]
        result = run_child(LOAD, self.env, args)
        if "error" in result:
            self.failure = result
        else:
            assert result["skorch"] == self.config.skorch, (result, self.config)
            assert result["patched"] == (self.config.how == "patched"), (result, self.config)
        return result


def side(size_mib: float) -> int:
    return round(math.sqrt(size_mib * MIB / 4))


def measure_size(
    size: float, runs: int, dirs: dict[str, str | None], configs: tuple[Config, ...]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="bench-loading-") as folder:
        written = run_child(WRITE, child_env(dirs["1.4.0"]), [str(side(size)), folder])
        if "error" in written or written["skorch"] != "1.4.0":
            raise SystemExit(f"writing the {size} MiB net failed: {written}")
        cells: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {}
        for config in configs:
            env = child_env(dirs[config.skorch])
            for fmt in config.formats:
                path = Path(folder, FILES[fmt])
                cells[config.name, fmt] = Cell(config, fmt, env, path, written["crc"])
        return interleaved(cells, runs)


def table(results: dict[float, dict[tuple[str, str], list[dict[str, Any]]]]) -> str:
    lines = [
        "| weights | format | configuration | time s, median (min–max) | time ×ref "
        "| peak rise MiB, median (min–max) | rise ×weights | rise ×ref | check |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, cells in results.items():
        weights = side(size) ** 2 * 4 / MIB
        reference = cells[REFERENCE]
        ref_ok = "error" not in reference[0]
        for (name, fmt), samples in cells.items():
            start = f"| {weights:.1f} MiB | {fmt} | {name} |"
            if "error" in samples[0]:
                lines.append(start + f" fails: {samples[0]['error']} | | | | | |")
                continue
            times = [s["seconds"] for s in samples]
            rises = [s["rise_mib"] for s in samples]
            checks = ", ".join(sorted({s["check"] for s in samples}))
            ref_times = [s["seconds"] for s in reference] if ref_ok else []
            ref_rises = [s["rise_mib"] for s in reference] if ref_ok else []
            time_x = f"{ratio(times, ref_times):.2f}" if ref_ok else "–"
            rise_x = f"{ratio(rises, ref_rises):.2f}" if ref_ok else "–"
            lines.append(
                f"{start} {spread(times, digits=3)} | {time_x} | {spread(rises, digits=1)} "
                f"| {statistics.median(rises) / weights:.2f} | {rise_x} | {checks} |"
            )
    return "\n".join(lines)


def plot(results: dict[float, dict[tuple[str, str], list[dict[str, Any]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rise_axes, time_axes) = plt.subplots(1, 2, figsize=(13, 5))
    keys = next(iter(results.values())).keys()
    for key in keys:
        points = [
            (side(size) ** 2 * 4 / MIB, cells[key])
            for size, cells in results.items()
            if "error" not in cells[key][0]
        ]
        if not points:
            continue
        xs = [weights for weights, _ in points]
        label = key[0] if key[1] == "-" else f"{key[0]}, {key[1]}"
        style = "--" if key[1] == "torch.save" else "-"
        rises = [statistics.median([s["rise_mib"] for s in c]) / w for w, c in points]
        times = [statistics.median([s["seconds"] for s in c]) for _, c in points]
        rise_axes.plot(xs, rises, style, marker="o", label=label)
        time_axes.plot(xs, times, style, marker="o", label=label)
    for axes in (rise_axes, time_axes):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("weight size (MiB)")
        axes.grid(True, which="both", alpha=0.3)
    rise_axes.set_ylabel("peak RSS rise / weight size")
    rise_axes.set_title("peak RSS rise while unpickling (median)")
    time_axes.set_yscale("log")
    time_axes.set_ylabel("seconds")
    time_axes.set_title("unpickling time (median)")
    time_axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 16, 64, 256, 512])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="sizes 1 16 64, 3 runs")
    parser.add_argument("--skorch-dir", action="append", default=[], metavar="VERSION=PATH")
    parser.add_argument("--out", type=Path, default=RESULTS / "loading.md")
    parser.add_argument("--plot", type=Path, default=RESULTS / "loading.png")
    parser.add_argument(
        "--configs", nargs="+", metavar="NAME", help=f"a subset of: {[c.name for c in CONFIGS]}"
    )
    args = parser.parse_args()
    sizes, runs = ([1, 16, 64], 3) if args.quick else (args.sizes, args.runs)
    names = {REFERENCE[0], *(args.configs or (c.name for c in CONFIGS))}
    if unknown := names - {c.name for c in CONFIGS}:
        parser.error(f"--configs: no configuration named {sorted(unknown)}")
    configs = tuple(c for c in CONFIGS if c.name in names)
    dirs = skorch_dirs(sorted({c.skorch for c in configs}), args.skorch_dir)
    top, results = header(sorted(dirs)), {}
    for size in sizes:
        print(f"{size:g} MiB", file=sys.stderr, flush=True)
        results[size] = measure_size(size, runs, dirs, configs)
    intro = (
        f"{runs} interleaved runs per cell, each a fresh interpreter; ratios (×ref) are to "
        f"`{REFERENCE[0]}` loading the `{REFERENCE[1]}` file of the same size. "
        "A cell that raised is run once."
    )
    text = "\n\n".join([f"# Unpickling a fitted net\n\n{top}", intro, table(results)])
    write_results("loading", text, args.out)
    plot(results, args.plot)


if __name__ == "__main__":
    main()
