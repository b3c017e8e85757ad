"""A PEP 578 audit hook: defence in depth under the restricted unpickler.

The unpickler's rules decide what a file may call and build. If a gadget slips
through them anyway (a method of an allowed class that looks an attribute up by a
name it is given, say), it still has to reach the OS through the interpreter, and
the interpreter announces that with an audit event. While a guarded load runs in
this context, the events no legit net load raises are refused with
``UntrustedPickleError``. Which those are was measured, not guessed: a legit
``load()`` and a patched ``pickle.load`` of real nets (skorch 1.0.0, 1.1.0, 1.4.0,
the corpus files) raise none of them once imports are done (``resolving()``);
``tests/test_hook.py`` keeps it so. A loader opens (or maps) its file before it
enters ``guarding()``: inside, ``open`` and ``mmap`` are refused like any other.

What the hook cannot see: CPython raises no event for an ordinary attribute set on
a class or a function's ``__dict__`` (class patching through BUILD), for reading
``function.__globals__``, or for starting a thread (3.11); those are the opcode
rules' job alone.
"""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import os
import pickle
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

from ..errors import UntrustedPickleError

# Refused outright, each because no net load needs it and a gadget could use it:
_REFUSED = frozenset(
    {
        "exec",  # running code objects; a module's own import runs under resolving()
        "compile",  # source to code: the first step of every exec/eval gadget
        "import",  # a new module runs its code; allowed names resolve under resolving()
        "code.__new__",  # forging code objects
        "function.__new__",  # ... and functions around them
        "marshal.load",  # code objects from bytes
        "marshal.loads",
        "pickle.find_class",  # a nested pickle that did not come through the policy
        "builtins.input",  # blocks the load on stdin
        "builtins.breakpoint",  # a debugger runs anything
        "gc.get_objects",  # every live object: other modules' secrets, writable
        "gc.get_referrers",
        "gc.get_referents",
        "urllib.Request",  # network
        "webbrowser.open",
        # CPython audits setting only special attributes: __code__, __defaults__ of functions,
        # __bases__, __name__ of classes. Rewriting code in place; no net load does it.
        "object.__setattr__",
        "object.__delattr__",
    }
)
_REFUSED_PREFIXES = (
    "os.",  # system, exec*, spawn*, posix_spawn, fork, kill, and every file-system change
    "subprocess.",
    "shutil.",
    "tempfile.",
    "glob.",
    "socket.",
    "http.client.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "nntplib.",
    "telnetlib.",
    "ctypes.",
    "sqlite3.",
    "mmap.",  # a net's bytes are already in memory; new mappings need a file anyway
    "pty.",
    "syslog.",
    "resource.",
    "signal.",
    "winreg.",
    "_winapi.",
    "msvcrt.",
    "cpython.",  # run_file, run_command and the like
    "sys.",  # addaudithook (no second hook stacked by a gadget), settrace, setprofile,
    # excepthook, unraisablehook, _current_frames; but see _ALLOWED
)
# Not refused, reading: sys._getframe and object.__getattr__ (a function's __code__, a
# traceback's tb_frame). Frames and code run nothing without exec or function.__new__, which
# are refused; a function's __globals__ hands out as much without any event; and
# inspect.signature reads __code__ (scikit-learn's parameter validation, on any call).
_ALLOWED = frozenset({"sys._getframe", "sys._getframemodulename"})

_where: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "skorch_loadfix.safe.hook.where", default=None
)
_lock = threading.Lock()
_installed = False
_running = 0  # guarded blocks active in any context: the idle hook returns on one test


class RefusedEvent(UntrustedPickleError):
    """An audit event a guarded load raised that no pickled net needs."""

    def __init__(self, where: str, event: str, args: tuple[Any, ...]) -> None:
        described = ", ".join(describe(arg) for arg in args[:2])
        self.event = event
        self.refused = {event: described}
        pickle.UnpicklingError.__init__(  # the message is not one about globals
            self,
            f"{where}: while unpickling, something tried {event}({described}), which no "
            "pickled net needs; skorch_loadfix's audit hook refused it. The file is malicious "
            "or names a class whose methods do more than restore state: do not load it. If "
            "you trust the file entirely, use pickle.load inside "
            "skorch_loadfix.torch_load_kwargs(weights_only=False).",
        )


@contextlib.contextmanager
def guarding(where: str) -> Iterator[None]:
    """Refuse, in this context only, the events no net load raises; ``where`` names the load."""
    global _running
    _install()
    with _lock:
        _running += 1
    token = _where.set(where)  # nothing between here and try: an event there would leak it
    try:
        yield
    finally:
        _where.reset(token)
        with _lock:
            _running -= 1


@contextlib.contextmanager
def resolving() -> Iterator[None]:
    """Inside ``guarding``: the policy imports a module for a name it allows.

    Importing a trusted package runs its code (open, marshal, exec, compile), all of it
    the policy's choice, not the file's.
    """
    token = _where.set(None)
    try:
        yield
    finally:
        _where.reset(token)


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        # What the first guarded load would import inside the guard: torch.load's config
        # module, and the codecs pickle's text opcodes decode with (protocols 0-2).
        with contextlib.suppress(ImportError):
            import torch.utils.serialization.config  # noqa: F401
        for encoding in ("raw_unicode_escape", "unicode_escape", "ascii", "latin1", "utf-8"):
            codecs.lookup(encoding)
        sys.addaudithook(_audit)
        _installed = True


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _running:
        return
    where = _where.get()
    if where is None or not refused(event, args):
        return
    raise RefusedEvent(where, event, args)


def refused(event: str, args: tuple[Any, ...]) -> bool:
    """Whether a guarded load may not raise this event; shared with the tests' recorder."""
    if event in _REFUSED:
        return True
    if event == "open":
        return not _reads_loaded_source(args)
    return event.startswith(_REFUSED_PREFIXES) and event not in _ALLOWED


def _reads_loaded_source(args: tuple[Any, ...]) -> bool:
    """Reading the source of an imported module: what a warning shown during a load does."""
    path, mode, flags = (*args, None, None, None)[:3]
    read_only = (
        set(mode) <= set("rbt")
        if isinstance(mode, str)
        else isinstance(flags, int)
        and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND) == 0
    )
    if not read_only or not isinstance(path, str):
        return False
    modules = list(sys.modules.values())  # vars(), as getattr could run a module's __getattr__
    return any(isinstance(m, types.ModuleType) and vars(m).get("__file__") == path for m in modules)


def describe(arg: Any) -> str:
    """An argument, without calling anything the file may have chosen (no custom ``__repr__``)."""
    if isinstance(arg, (str, bytes, int, float, type(None))):
        text = repr(arg)
        return text if len(text) <= 120 else text[:117] + "..."
    return f"<{type(arg).__module__}.{type(arg).__qualname__}>"
