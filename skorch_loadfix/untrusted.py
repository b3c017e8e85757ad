"""Loading a pickled skorch net from a file you don't trust.

``pickle.load`` resolves every global the outer pickle names before skorch sees
anything, so no patch to skorch can restrict it. ``load()`` reads the whole file
itself: a static audit of every level first, refusing before anything is
constructed, then an unpickler whose every global goes through the same policy.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from typing import IO, Any

File = str | os.PathLike[str] | IO[bytes]
# Both functions import what they need (and so torch) when called: `import
# skorch_loadfix` stays light, as the .pth auto-activation needs it to be.


def load(file: File, *, allow: Iterable[object] = ()) -> Any:
    """Unpickle a skorch net, or anything holding one, that may be malicious.

    Every global at every level (the outer pickle, the net's blob in any of its
    formats, each tensor stream) must be on the allowlist or in ``allow``: classes,
    functions or ``"module.qualname"`` strings you trust. The file's own
    ``torch_load_kwargs`` are ignored. Raises ``UntrustedPickleError`` naming every
    refused global before anything is constructed.
    """
    from .allowlist import policy
    from .guarded import GuardedUnpickler
    from .inspection import read_file, refuse_untrusted, unreadable
    from .safe.hook import guarding

    where = "skorch_loadfix.load()"
    trusted = policy(allow)
    data = _read(file, where)
    refuse_untrusted(read_file(data)[1], trusted, where)
    with unreadable(), guarding(where):  # unreadable: allowed globals, not a net's state, say
        return GuardedUnpickler(io.BytesIO(data), trusted, where).load()


def untrusted_globals(file: File, *, allow: Iterable[object] = ()) -> dict[str, str]:
    """Each global ``load(file, allow=allow)`` would refuse, with why and where.

    Reads the file without importing or running anything it names.
    """
    from .allowlist import policy
    from .inspection import read_file, refused

    trusted = policy(allow)
    return refused(read_file(_read(file, "skorch_loadfix.untrusted_globals()"))[1], trusted)


def _read(file: File, where: str) -> bytes:
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as opened:
            return opened.read()
    data = file.read() if hasattr(file, "read") else None
    if not isinstance(data, bytes):
        raise TypeError(
            f"{where} takes a path or a file opened in binary mode ('rb'), "
            f"not {type(file).__name__}"
        )
    return data
