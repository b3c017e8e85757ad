"""Loading a pickled skorch net from a file you don't trust.

``pickle.load`` resolves every global the outer pickle names before skorch sees
anything, so no patch to skorch can restrict it. ``load()`` reads every level
itself: a static audit first, refusing before anything is constructed, then the
restricted unpickler, whose rules the audit applies too. A file on disk is mapped,
not read, so that the tensors are the only copy of its weights in memory.
"""

from __future__ import annotations

import gc
import io
import mmap
import os
import stat
from collections.abc import Callable, Iterable
from typing import IO, Any, TypeVar, cast

from .errors import UntrustedPickleError

File = str | os.PathLike[str] | IO[bytes]
T = TypeVar("T")
# Both functions import what they need (and so torch) when called: `import
# skorch_loadfix` stays light, as the .pth auto-activation needs it to be.


def load(file: File, *, allow: Iterable[object] = ()) -> Any:
    """Unpickle a skorch net, or anything holding one, that may be malicious.

    Every level (the outer pickle, the net's blob in any of its formats, each tensor
    stream) is read by the restricted unpickler: only names on the allowlist or in
    ``allow`` (classes, functions or ``"module.qualname"`` strings you trust), called and
    built only as the policy says. The file's own ``torch_load_kwargs`` are ignored.
    A static audit runs first, so that a refused file raises ``UntrustedPickleError``,
    naming what it refuses, before anything is constructed.

    The file may be a pickle (``pickle.dump``, cloudpickle), a ``joblib.dump`` file, plain
    or compressed (joblib's arrays are read by the same rules), or a ``torch.save`` file
    of the net. Anything else (empty, text, an ``.npz``, a ``state_dict`` in safetensors)
    raises ``content.NotAPickledNet``, an ``UnpicklingError`` saying what the file is and
    what to do.
    """
    from .safe.hook import guarding
    from .safe.policy import policy
    from .safe.readers import Reader
    from .safe.verifier import audit, refuse_untrusted, unreadable

    where = "skorch_loadfix.load()"
    trusted = policy(allow)

    def guarded(data: bytes | memoryview) -> Any:
        with guarding(where):
            refuse_untrusted(audit(data, trusted, where), where)
            with unreadable():  # allowed globals, but not a net's state, say
                return Reader(None, {}, where, trusted).whole_file(data)

    return _reading(file, where, guarded)


def untrusted_globals(file: File, *, allow: Iterable[object] = ()) -> dict[str, str]:
    """What ``load(file, allow=allow)`` would refuse, with why and where.

    Mostly globals; a broken rule is named by its opcode and object. Reads the file
    without importing or running anything it names.
    """
    from .safe.policy import policy
    from .safe.verifier import audit

    where = "skorch_loadfix.untrusted_globals()"
    trusted = policy(allow)
    return _reading(file, where, lambda data: audit(data, trusted, where).refused)


def _reading(file: File, where: str, use: Callable[[bytes | memoryview], T]) -> T:
    """``use(data)`` on the file's bytes; a map of them is closed when ``use`` returns.

    What is no pickled net (an empty file, a state_dict, text) is one ``NotAPickledNet``
    sentence saying what the file is and what to do (see ``content``).

    The unpickler hands out views of the map (a net's blob, tensor streams) for skorch's
    reader to consume. A view that outlives the load would alias the file, and keep it
    mapped: bytes the file put under the blob's key and kept elsewhere. Such a file is refused.
    """
    from .content import explaining
    from .safe.verifier import KEPT_VIEW

    data = _read(file, where)
    if not isinstance(data, memoryview):
        with explaining(data):
            return use(data)
    mapping = cast(mmap.mmap, data.obj)
    with explaining(data):
        result = use(data)  # raising, views live on in the traceback: the map closes after
    del data
    for _ in range(2):
        try:
            mapping.close()
            return result
        except BufferError:
            gc.collect()  # views in reference cycles the load left behind
    del result  # and with it the views: the map closes after them
    raise UntrustedPickleError(where, {KEPT_VIEW: "in what the load returns"})


def _read(file: File, where: str) -> bytes | memoryview:
    """The file's bytes: a read-only map of a file on disk, so that the tensors read from it
    are the only copy of their data in memory (see ``MemoryFile``); other objects are read."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as opened:
            return _mapped(opened) or opened.read()
    data = (_mapped(file) or file.read()) if hasattr(file, "read") else None
    if not isinstance(data, (bytes, memoryview)):
        raise TypeError(
            f"{where} takes a path or a file opened in binary mode ('rb'), "
            f"not {type(file).__name__}"
        )
    return data


def _mapped(file: IO[bytes]) -> memoryview | None:
    """The rest of ``file`` from its position, mapped, as ``read()`` would return it; or None
    where it can't be: not a plain binary file (gzip's has the compressed file's fileno),
    not a regular file, empty."""
    if type(file) not in (io.BufferedReader, io.FileIO):
        return None
    try:
        fd, start = file.fileno(), file.tell()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError):  # no fileno, unseekable, empty, ...
        return None
    file.seek(0, io.SEEK_END)  # consumed, as by read()
    return memoryview(mapping)[start:]  # closed by _reading()
