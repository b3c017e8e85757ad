"""What ``import skorch_loadfix`` and ``apply()`` cost, before and after ``import skorch``.

    python benchmarks/import_apply.py [--runs 15] [--out benchmarks/results/import_apply.md]

Three kinds of fresh interpreter, started in turn each run (SKORCH_LOADFIX unset):
``plain`` only imports skorch; ``before`` imports skorch_loadfix, calls ``apply()`` (which
registers an import hook) and then imports skorch (which is patched as it is imported);
``after`` imports skorch, then skorch_loadfix, then calls ``apply()`` (which patches at
once). Each step is timed with ``perf_counter`` inside the child. Uses the installed skorch.
"""

from __future__ import annotations

import argparse
import functools
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

# Each child times its steps before importing anything else (the report comes last).
CHILDREN = {
    "plain": """
import time
t0 = time.perf_counter()
import skorch
t1 = time.perf_counter()
from _common import report
report({"import skorch": t1 - t0})
""",
    "before": """
import sys, time
t0 = time.perf_counter()
import skorch_loadfix
t1 = time.perf_counter()
torch_imported = "torch" in sys.modules
skorch_loadfix.apply()
t2 = time.perf_counter()
import skorch
t3 = time.perf_counter()
assert skorch_loadfix.is_applied()
from _common import report
report({"import skorch_loadfix": t1 - t0, "apply()": t2 - t1, "import skorch": t3 - t2,
        "all": t3 - t0, "torch imported": torch_imported})
""",
    "after": """
import time
t0 = time.perf_counter()
import skorch
t1 = time.perf_counter()
import skorch_loadfix
t2 = time.perf_counter()
skorch_loadfix.apply()
t3 = time.perf_counter()
assert skorch_loadfix.is_applied()
from _common import report
report({"import skorch": t1 - t0, "import skorch_loadfix": t2 - t1, "apply()": t3 - t2,
        "all": t3 - t0})
""",
}

ROWS = (  # (child, step, what the row says, whether to show a ratio to plain `import skorch`)
    ("plain", "import skorch", "`import skorch`, no skorch_loadfix (reference)", True),
    ("before", "import skorch_loadfix", "`import skorch_loadfix` first thing", False),
    ("before", "apply()", "`apply()` before `import skorch` (registers the hook)", False),
    ("before", "import skorch", "`import skorch` after `apply()` (patched as imported)", True),
    ("before", "all", "all three: `import skorch_loadfix; apply(); import skorch`", True),
    ("after", "import skorch", "`import skorch` first thing", True),
    ("after", "import skorch_loadfix", "`import skorch_loadfix` after `import skorch`", False),
    ("after", "apply()", "`apply()` after `import skorch` (patches at once)", False),
    ("after", "all", "all three: `import skorch; import skorch_loadfix; apply()`", True),
)


def child(kind: str) -> dict[str, float]:
    result = run_child(CHILDREN[kind], child_env())
    if "error" in result:
        raise SystemExit(f"{kind}: {result['error']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS / "import_apply.md")
    args = parser.parse_args()
    top = header()
    samples = interleaved({kind: functools.partial(child, kind) for kind in CHILDREN}, args.runs)
    reference = [s["import skorch"] for s in samples["plain"]]
    lines = [
        f"# Importing skorch_loadfix and apply()\n\n{top}\n",
        f"{args.runs} interleaved runs of each kind of child, times in ms; ratios are to "
        "plain `import skorch`.\n",
        "| child | step | ms: median (min–max) | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for kind, step, what, with_ratio in ROWS:
        times = [s[step] for s in samples[kind]]
        shown = f"{ratio(times, reference):.3f}" if with_ratio else ""
        lines.append(f"| {kind} | {what} | {spread(times, 1e3)} | {shown} |")
    torch_imported = any(s["torch imported"] for s in samples["before"])
    lines += ["", f"`import skorch_loadfix` alone imports torch: {torch_imported}."]
    write_results("import_apply", "\n".join(lines).rstrip(), args.out)


if __name__ == "__main__":
    main()
