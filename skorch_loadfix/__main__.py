"""``python -m skorch_loadfix``: the verdict and status; ``demo``; ``inspect``; ``upgrade``.

Exit status: 0 success, 1 a patched load failed in the demo or a file ``upgrade``
could not upgrade, 2 a usage error or a file ``inspect`` cannot read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import site
import sys
from pathlib import Path


def _installed_pth() -> Path | None:
    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return next((p for f in folders if (p := Path(f, "skorch_loadfix.pth")).exists()), None)


def show_status() -> int:
    """A verdict for this skorch/torch pair and the next step; then the details: what
    apply() would patch, how activation stands, and where the .pth is."""
    import skorch.net

    from .legacy import TRANSLATIONS
    from .patching import status
    from .sites import plan
    from .status import installed_version
    from .verdict import measure

    print(f"skorch {installed_version('skorch')}, torch {installed_version('torch')}")
    verdict = measure(status().activated_by)
    print(f"Verdict: {verdict.line}.")
    print(verdict.next_step)
    print()
    print("apply() patches:")
    for patch in plan(skorch.net, installed_version("skorch") or "unknown"):
        print(f"  {patch.site}")
    print("and translates these names that old pickled nets use:")
    for old, new in TRANSLATIONS.items():
        print(f"  {old} -> {new}")
    value = os.environ.get("SKORCH_LOADFIX", "")
    state = "on in this process and its children" if value == "1" else "off"
    print(f"SKORCH_LOADFIX={value!r}: auto-activation {state}")
    print(f"skorch_loadfix.pth: {_installed_pth() or 'not found (auto-activation unavailable)'}")
    return 0


def inspect_command(path: Path, *, as_json: bool, allow: tuple[str, ...] = ()) -> int:
    from .inspection import inspect_file
    from .upgrade import blocked_allow

    if blocked_allow(allow):
        print(f"skorch-loadfix inspect: {blocked_allow(allow)}", file=sys.stderr)
        return 2
    try:
        report = inspect_file(path.read_bytes(), allow)
    except Exception as exc:  # a report on untrusted bytes: one line, never a traceback
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"skorch-loadfix inspect: {path}: {message}", file=sys.stderr)
        return 2
    if as_json:
        fields = {**dataclasses.asdict(report), "verdict": report.verdict}
        print(json.dumps(fields, indent=2, default=repr))
    else:
        print(report)
    return 0


def make_parser() -> argparse.ArgumentParser:
    """Every command and argument, each with its help: what ``--help`` shows."""
    from .status import installed_version

    parser = argparse.ArgumentParser(
        prog="python -m skorch_loadfix",
        description="Without a command: whether this skorch/torch pair needs the fix, the next "
        "step, then what apply() patches and how auto-activation stands.",
        epilog="Exit status: 0 success, 1 a patched load failed in the demo or a file "
        "upgrade could not upgrade, 2 a usage error or a file inspect cannot read.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"skorch-loadfix {installed_version('skorch-loadfix') or '(not installed)'}",
        help="print skorch-loadfix's version and exit",
    )
    commands = parser.add_subparsers(
        dest="command", help="without one: the verdict and status described above"
    )
    commands.add_parser(
        "demo",
        help="show the bug and the fix on the installed skorch and torch",
        description="Pickle a small fitted net in both blob formats and load each in fresh "
        "interpreters: unpatched, patched, patched with weights_only=True, and reverted.",
    )
    inspect = commands.add_parser(
        "inspect",
        help="report on a pickled skorch net without running anything from it",
        description="The blob format, the torch_load_kwargs and device stored in the file, "
        "every global it names at each level, and whether it loads with weights_only=True. "
        "Exit status 2 for a file that is not a readable pickle.",
    )
    inspect.add_argument("file", type=Path, help="the file to report on; nothing in it is run")
    inspect.add_argument("--json", action="store_true", help="print JSON for machines")
    inspect.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="MODULE.QUALNAME",
        help="a global load() may resolve besides its allowlist, as upgrade --allow (repeatable)",
    )
    from .upgrade import add_arguments

    upgrade = commands.add_parser(
        "upgrade",
        help="re-save old pickled nets so the installed skorch reads them without this package",
        description="Load IN (a pickle, joblib or torch.save file of a net, or of a Pipeline "
        "or search object holding nets; through load(), or --trusted) and write OUT as the "
        "installed skorch writes it, in IN's format, atomically; or every file of a folder IN "
        "into --out FOLDER, with a summary table. Exit status 1 if a file failed, 2 for a "
        "usage error (OUT exists without --force, OUT is IN, a blocklisted --allow).",
    )
    add_arguments(upgrade)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.command == "upgrade":
        from .upgrade import run

        return run(args)
    if args.command == "inspect":
        return inspect_command(args.file, as_json=args.json, allow=tuple(args.allow))
    if args.command == "demo":
        from .demo import main as demo

        return demo()
    return show_status()


def run() -> int:
    """``main()``, where a reader that stops reading (``| head``) ends it quietly."""
    try:
        status = main()
        sys.stdout.flush()  # inside the try: a closed pipe fails here, not at exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(run())
