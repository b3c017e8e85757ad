"""``python -m skorch_loadfix [demo]``: the status, or the demo of the bug and the fix."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skorch_loadfix",
        description="Without a command: what is installed and what apply() would patch.",
        epilog="Exit status: 0 success, 1 a patched load failed, 2 usage error.",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("demo", help="show the bug and the fix on the installed skorch and torch")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo

        return demo()
    import skorch_loadfix

    skorch_loadfix.apply()
    import skorch  # noqa: F401  (patches it, so the status lists the call sites)

    print(skorch_loadfix.status())
    return 0


if __name__ == "__main__":
    sys.exit(main())
