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
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

from .errors import UntrustedPickleError

if TYPE_CHECKING:
    from .safe.effects import NetEffects

File = str | os.PathLike[str] | IO[bytes]
T = TypeVar("T")
# Both functions import what they need (and so torch) when called: `import
# skorch_loadfix` stays light, as the .pth auto-activation needs it to be.


def load(file: File, *, allow: Iterable[object] = (), device: object = None) -> Any:
    """Unpickle a skorch net, or anything holding one, that may be malicious.

    Every level (the outer pickle, the net's blob in any of its formats, each tensor
    stream) is read by the restricted unpickler: only names on the allowlist or in
    ``allow`` (classes, functions or ``"module.qualname"`` strings you trust), called and
    built only as the policy says. The file's own ``torch_load_kwargs`` are ignored, and
    replaced on each net it returns by the caller's (a ``torch_load_kwargs()`` block, else
    ``apply()``'s default, else None: the installed skorch's), so that no later
    ``load_params`` of the net (``LoadInitState`` at ``fit``) runs with the file's.
    A static audit runs first, so that a refused file raises ``UntrustedPickleError``,
    naming what it refuses, before anything is constructed.
    A tensor saved on a device this machine lacks loads on the CPU, as skorch maps its
    own; ``device`` loads every tensor onto it instead (see ``load_onto``).

    The file may be a pickle (``pickle.dump``, cloudpickle), a ``joblib.dump`` file, plain
    or compressed (joblib's arrays are read by the same rules), or a ``torch.save`` file
    of the net. Anything else (empty, text, an ``.npz``, a ``state_dict`` in safetensors)
    raises ``content.NotAPickledNet``, an ``UnpicklingError`` saying what the file is and
    what to do.

    Raises:
        UntrustedPickleError: the file names or does what the policy does not allow;
            ``.refused`` says what and where, ``.summary`` is a sentence to show a user.
            Nothing it names was called.
        pickle.UnpicklingError: the bytes are not a pickle this loader can read
            (truncated, corrupt), or not a pickled net at all (``content.NotAPickledNet``,
            which names what the file is). ``UntrustedPickleError`` is a subclass: catch
            it first to tell the two apart.
        OSError: ``file`` is a path that cannot be opened or read.
        TypeError: ``file`` is neither a path nor a file opened in binary mode.
        ValueError: ``allow`` names something on the hard blocklist (``os.system``, ...).
    """
    from .devices import outer_map_location
    from .load_kwargs import caller_kwargs, load_onto
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
                reader = Reader(outer_map_location(), caller_kwargs() or {}, where, trusted)
                return reader.whole_file(data)

    if device is None:
        return _reading(file, where, guarded)
    with load_onto(device):
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


def post_load_effects(file: File, *, allow: Iterable[object] = ()) -> list[NetEffects]:
    """What each net in ``file`` does when you use it: the paths its callbacks write and
    read at ``fit``, the callables it stores and will call, its ``torch_load_kwargs``.

    ``load()`` replaces the ``torch_load_kwargs``; the rest stays the file's choice, so
    read this before you fit or predict. Read statically, as ``untrusted_globals()`` reads:
    nothing the file names is imported or run.
    """
    from .safe.effects import post_load_effects_of
    from .safe.policy import policy
    from .safe.verifier import audit

    where = "skorch_loadfix.post_load_effects()"
    trusted = policy(allow)
    return _reading(file, where, lambda data: post_load_effects_of(audit(data, trusted, where)))


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
