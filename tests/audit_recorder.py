"""A test-only audit hook: what the guard refused, even where the exception was swallowed.

The guard turns a refused event into ``UntrustedPickleError``, which a caller (or a library
between the event and the caller, with ``except Exception``) may catch. This hook records
each refused event raised while a guarded load runs in this context, whoever catches what.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from skorch_loadfix.safe import hook

_log: list[tuple[str, str]] | None = None
_installed = False


def _record(event: str, args: tuple) -> None:
    if _log is not None and hook._where.get() is not None and hook.refused(event, args):
        _log.append((event, ", ".join(hook.describe(arg) for arg in args[:2])))


@contextlib.contextmanager
def recording() -> Iterator[list[tuple[str, str]]]:
    """The refused events raised inside the block: (event, its first arguments)."""
    global _log, _installed
    if not _installed:
        sys.addaudithook(_record)
        _installed = True
    _log = found = []
    try:
        yield found
    finally:
        _log = None
