"""Pickle scanners side by side: false positives on legit nets, false negatives on gadgets.

    python benchmarks/peers.py [--out benchmarks/results/peers.md] [--keep FOLDER]

Run it in a venv with torch, skorch, scikit-learn, this package (``pip install -e .``) and the
peers: ``pip install picklescan modelscan fickling``. A tool missing is reported as such.

Legit nets: the four real files of tests/data/corpus, and nets the installed
skorch pickles: tests/models.py's fit() (nested custom modules, Adam) as skorch pickles it
and in both blob formats, one with an EpochScoring callback, and a scikit-learn Pipeline
around one. Gadgets: every payload family of tests/payloads.py at each level it applies to
(the outer pickle, the net's blob, a tensor stream in the blob), and issue 9's _cached_call
chain in the outer pickle and in the blob. Each payload would only create a marker file.

Per tool, a legit file it flags is a false positive, a gadget it passes a false negative.
"flags" means: the scanner reports an issue, fails to scan or crashes; torch.load(weights_only=True)
and skorch_loadfix.load() raise; skorch_loadfix.untrusted_globals() names a global or
raises. The loaders really load (a payload that got through leaves its marker, counted as
"ran"); the scanners only read. Nets whose classes live in the user's module
(tests/models.py's Model and Block) are allowed to ours with allow=[Model, Block], as a user
would; torch.load has no such argument short of add_safe_globals, so it gets none.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import logging
import os
import pickle
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
CORPUS = TESTS / "data" / "corpus"  # the real files, with their provenance
sys.path[:0] = [str(HERE), str(TESTS)]

from _common import RESULTS, header, write_results  # noqa: E402


@dataclass(frozen=True)
class Sample:
    name: str
    path: Path
    malicious: bool


def samples(folder: Path, marker: Path) -> list[Sample]:
    """Every file the tools are run on, written into ``folder``."""
    from gadget_chain import cached_call_chain
    from models import fit
    from payloads import BLOB_LEVEL, OUTER, payloads, placed
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from skorch.callbacks import EpochScoring

    from skorch_loadfix.formats import WRITERS, dumps

    net = fit()
    legit = {"fit() as skorch pickles it": pickle.dumps(net)}
    legit.update({f"fit() in the {writer} blob format": dumps(net, writer) for writer in WRITERS})
    legit["fit() with EpochScoring"] = pickle.dumps(fit(callbacks=[EpochScoring("accuracy")]))
    pipeline = Pipeline([("scale", StandardScaler()), ("net", fit())])
    legit["Pipeline(StandardScaler, fit())"] = pickle.dumps(pipeline)
    if CORPUS.is_dir():
        legit.update({f"corpus {p.name}": p.read_bytes() for p in sorted(CORPUS.glob("*.pkl"))})

    state = net.__getstate__()
    bad = {}
    (marker.parent / "script.py").write_text(f"open({str(marker)!r}, 'w').close()")
    for payload in payloads(marker):
        if payload.family == "EXT1":  # live only with a copyreg code the tests register
            continue
        for level in payload.levels:
            bad[f"{payload.family} @ {level}"] = placed(payload.data, level, net, state)
    chain = cached_call_chain(marker)
    for level in (OUTER, BLOB_LEVEL):
        bad[f"_cached_call chain @ {level}"] = placed(chain, level, net, state)

    found = []
    for malicious, files in ((False, legit), (True, bad)):
        for index, (name, data) in enumerate(files.items()):
            path = folder / f"{'bad' if malicious else 'legit'}-{index:03d}.pkl"
            path.write_bytes(data)
            found.append(Sample(name, path, malicious))
    return found


# --- the tools: each returns True when it flags the file ------------------------------------


def picklescan(path: Path) -> bool:
    from picklescan.scanner import scan_file_path

    result = scan_file_path(str(path))
    return bool(result.issues_count or result.infected_files or result.scan_err)


def modelscan(path: Path) -> bool:
    from modelscan.modelscan import ModelScan

    result = ModelScan().scan(path)
    return bool(result["issues"] or result["errors"])


def fickling(path: Path) -> bool:
    import fickling

    return not fickling.is_likely_safe(str(path))


def torch_weights_only(path: Path) -> bool:
    import torch

    try:
        torch.load(path, weights_only=True)
    except Exception:
        return True
    return False


def ours_audit(path: Path) -> bool:
    import skorch_loadfix
    from skorch_loadfix.demo_model import Block, Model

    try:
        return bool(skorch_loadfix.untrusted_globals(path, allow=[Model, Block]))
    except Exception:
        return True


def ours_load(path: Path) -> bool:
    import skorch_loadfix
    from skorch_loadfix.demo_model import Block, Model

    try:
        skorch_loadfix.load(io.BytesIO(path.read_bytes()), allow=[Model, Block])
    except Exception:
        return True
    return False


TOOLS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "picklescan": ("picklescan", picklescan),
    "modelscan": ("modelscan", modelscan),
    "fickling": ("fickling", fickling),
    "torch.load(weights_only=True)": ("torch", torch_weights_only),
    "skorch_loadfix.untrusted_globals()": ("skorch-loadfix", ours_audit),
    "skorch_loadfix.load()": ("skorch-loadfix", ours_load),
}


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def clear(marker: Path) -> bool:
    """Whether the marker was there (a payload ran); removes it."""
    existed = marker.exists()
    shutil.rmtree(marker, ignore_errors=True)  # venv.create makes it a folder
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
    return existed


MAX_LISTED = 12


def run(files: list[Sample], marker: Path) -> tuple[list[str], list[str]]:
    rows = [
        "| tool (version) | legit flagged (false positives) | gadgets passed (false "
        "negatives) | gadgets that ran |",
        "| --- | --- | --- | --- |",
    ]
    notes = []
    legit = [s for s in files if not s.malicious]
    bad = [s for s in files if s.malicious]
    for tool, (package, check) in TOOLS.items():
        name = f"{tool} ({version(package)})"
        if version(package) == "not installed":
            rows.append(f"| {name} | not run | not run | |")
            continue
        flagged, ran, crashed = {}, [], set()
        for sample in files:
            clear(marker)
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    flagged[sample] = check(sample.path)
                except Exception:  # the tool itself failed on the file: it does not pass it
                    flagged[sample] = True
                    crashed.add(sample.name)
            if clear(marker):
                ran.append(sample.name)
        false_positives = [s.name for s in legit if flagged[s]]
        false_negatives = [s.name for s in bad if not flagged[s]]
        crashes = len(crashed & set(false_positives))
        rows.append(
            f"| {name} | {len(false_positives)} of {len(legit)}"
            + (f" ({crashes} by crashing)" if crashes else "")
            + f" | {len(false_negatives)} of {len(bad)} | {len(ran)} |"
        )
        for label, names in (
            ("flags", false_positives),
            ("passes", false_negatives),
            ("ran", ran),
            ("crashed on", sorted(crashed)),
        ):
            if names:
                shown = names[:MAX_LISTED] + [f"and {len(names) - MAX_LISTED} more"] * (
                    len(names) > MAX_LISTED
                )
                notes.append(f"- {tool} {label}: " + "; ".join(shown))
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "peers.md")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    options = parser.parse_args()
    logging.disable(logging.CRITICAL)  # modelscan logs every file it reads
    with tempfile.TemporaryDirectory() as scratch:
        folder = options.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        marker = Path(scratch) / "marker"
        files = samples(folder, marker)
        rows, notes = run(files, marker)
    legit = sum(not s.malicious for s in files)
    text = "\n".join(
        [
            "# Pickle scanners side by side",
            "",
            header(),
            "",
            f"{legit} legit files and {len(files) - legit} gadget files; "
            "what each tool says of each (see benchmarks/peers.py for what counts).",
            "",
            *rows,
            "",
            "Which files:",
            "",
            *notes,
        ]
    )
    write_results("peers", text, options.out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
