"""Which globals a pickled skorch net may name: a hard blocklist, then an allowlist.

Unpickling calls whatever a global names with arguments the file chooses, so the
allowlist holds only what is harmless called that way: data types, torch modules
and optimizers, skorch and scikit-learn estimators (their constructors only store
their arguments), and the few functions real nets reference. The blocklist names
what can run commands, import, open files or unpickle again; it wins over the
allowlist, over ``allow=`` and over ``torch.serialization.add_safe_globals``.
"""

from __future__ import annotations

import _compat_pickle
import functools
import importlib
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .legacy import translated


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A module blocks its submodules too.
BLOCKED_MODULES = _names(
    """os posix nt posixpath ntpath genericpath sys subprocess _posixsubprocess importlib
    runpy pkgutil pydoc zipimport pickle _pickle pickletools copyreg marshal shelve dill
    cloudpickle joblib ctypes _ctypes socket _socket ssl select selectors asyncio
    multiprocessing concurrent threading _thread signal shutil tempfile glob io _io
    fileinput code codeop pty tty webbrowser urllib http ftplib smtplib poplib imaplib
    telnetlib xmlrpc cProfile profile _lsprof timeit bdb pdb trace inspect gc types
    operator _operator platform sysconfig site venv ensurepip pip setuptools distutils
    sqlite3 torch.hub torch.package torch.jit torch.utils.cpp_extension
    torch.utils.benchmark torch.distributed torch._dynamo torch._inductor"""
)
BLOCKED_NAMES = frozenset(
    f"builtins.{name}"
    for name in _names(
        """eval exec compile open getattr setattr delattr __import__ globals
    locals vars input breakpoint exit quit help __build_class__ type super object
    classmethod staticmethod property memoryview"""
    )
) | {"torch.load", "torch.serialization.load", "numpy.load", "numpy.lib.npyio.load"}

# Functions real pickled nets reference, each harmless whatever it is called with.
_FUNCTIONS = _names(
    """builtins.print functools.partial _codecs.encode skorch_loadfix.stand_ins.no_backend
    skorch.setter.optimizer_setter skorch.callbacks.logging.rename_tensorboard_key
    skorch.utils.noop skorch.utils.to_numpy skorch.utils.to_tensor skorch.utils._identity
    skorch.utils._indexing_dict skorch.utils._indexing_list_tuple_of_data
    skorch.utils._indexing_ndframe skorch.utils._indexing_none skorch.utils._indexing_other
    numpy.core.multiarray._reconstruct numpy._core.multiarray._reconstruct
    numpy.core.multiarray.scalar numpy._core.multiarray.scalar
    numpy.random._pickle.__randomstate_ctor numpy.random._pickle.__generator_ctor
    numpy.random._pickle.__bit_generator_ctor"""
)
_TYPES = _names(
    """builtins.dict builtins.list builtins.tuple builtins.set builtins.frozenset
    builtins.bytearray builtins.complex builtins.slice builtins.range
    collections.OrderedDict collections.defaultdict collections.Counter collections.deque
    numpy.ndarray numpy.dtype torch.utils.data.dataloader.DataLoader"""
)
_TRUSTED_PACKAGES = (
    "torch",
    "skorch",
    "sklearn",
    "numpy",
    "skorch_loadfix",
)  # importing these runs nothing new
_TENSOR_PACKAGES = ("torch.nn", "torch.optim")


def python3_name(module: str, name: str) -> tuple[str, str]:
    """Pickles at protocols 0-2 may spell some names as Python 2 did."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def blocked(full_name: str) -> bool:
    """On the hard blocklist: a blocked name, or anything in a blocked module."""
    parts = full_name.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts))}
    return full_name in BLOCKED_NAMES or not prefixes.isdisjoint(BLOCKED_MODULES)


@dataclass(frozen=True)
class Policy:
    """What one load may resolve.

    ``allow``: names the caller trusts. ``imported_components``: also any
    ``nn.Module``/``Optimizer``/``LRScheduler`` subclass from a module already
    imported (the caller's own ``pickle.load`` imported the net's module classes).
    ``blocklist_only``: everything not blocked, for ``weights_only=False``.
    """

    allow: frozenset[str] = frozenset()
    imported_components: bool = False
    blocklist_only: bool = False

    def refusal(self, module: str, name: str) -> str | None:
        """Why ``module.name`` may not be resolved, or None if it may. Runs nothing."""
        module, name = translated(*python3_name(module, name))
        full = f"{module}.{name}"
        if blocked(full):
            return "blocked: it can run code, touch files or unpickle again"
        if any(part.startswith("__") and part.endswith("__") for part in full.split(".")):
            return "blocked: it reaches a dunder (a __main__ module, an object's internals)"
        obj = self._lookup(module, name)
        if obj is None and self.blocklist_only:  # resolve() raises what pickle would
            return None
        if obj is None and f"{module}.{name}" in self.allow:
            return "not found: no such module or attribute here; install or define it first"
        if obj is None:
            return "not allowed"
        if isinstance(obj, types.ModuleType):
            return "blocked: it is a module"
        canonical = canonical_name(obj)
        if blocked(canonical):
            return f"blocked: it is {canonical}"
        if self.blocklist_only or self._allows(full, obj):
            return None
        return "not allowed"

    def resolve(self, module: str, name: str) -> Any:
        """The object ``module.name`` names; only after ``refusal`` returned None."""
        return self._lookup(*translated(*python3_name(module, name)), raising=self.blocklist_only)

    def _lookup(self, module: str, name: str, *, raising: bool = False) -> Any:
        """The object, importing only trusted packages and allowed names; else None."""
        trusted = module.split(".")[0] in _TRUSTED_PACKAGES or self.blocklist_only
        if trusted or f"{module}.{name}" in self.allow:
            try:
                importlib.import_module(module)
            except (ImportError, ValueError, TypeError):  # no such module, or not a name
                if raising:
                    raise
                return None
        obj: Any = sys.modules.get(module)
        for part in name.split(".") if obj is not None else ():
            obj = getattr(obj, part) if raising else getattr(obj, part, None)
        return obj

    def _allows(self, full: str, obj: Any) -> bool:
        names = {full, canonical_name(obj)}
        listed = (self.allow, _FUNCTIONS, _TYPES, _torch_weights_only())
        if any(not names.isdisjoint(known) for known in listed):
            return True
        if any(obj is safe for safe in _user_safe_globals()):
            return True
        if not isinstance(obj, type):
            module = getattr(obj, "__module__", None) or ""
            return isinstance(obj, types.FunctionType) and module.startswith("sklearn.metrics.")
        return (
            obj.__module__.startswith(("skorch.", *(p + "." for p in _TENSOR_PACKAGES)))
            or _is_sklearn_estimator(obj)
            or (self.imported_components and _is_torch_component(obj))
        )


def policy(allow: Iterable[object] = ()) -> Policy:
    """A ``Policy`` allowing ``allow``: classes, functions or ``"module.qualname"`` strings."""
    if isinstance(allow, (str, bytes)) or not isinstance(allow, Iterable):
        raise TypeError(
            f"allow must be a list of classes, functions or 'module.qualname' strings, "
            f"not {type(allow).__name__}; write allow=[{allow!r}]"
        )
    names = set()
    for item in allow:
        if isinstance(item, str):
            name = item
        elif callable(item) and hasattr(item, "__qualname__"):
            name = canonical_name(item)
        else:
            raise TypeError(
                f"allow: {item!r} is neither a class, a function nor a 'module.qualname' "
                "string; pass the class itself, e.g. allow=[MyModule]"
            )
        if blocked(name):
            raise ValueError(f"allow: {name} is on the hard blocklist and cannot be allowed")
        names.add(name)
    return Policy(frozenset(names))


def canonical_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"


def _is_torch_component(obj: type) -> bool:
    bases = (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
    return issubclass(obj, bases)


def _is_sklearn_estimator(obj: type) -> bool:
    if not obj.__module__.startswith("sklearn."):
        return False
    from sklearn.base import BaseEstimator
    from sklearn.metrics._scorer import _BaseScorer

    return issubclass(obj, (BaseEstimator, _BaseScorer))


@functools.cache
def _torch_weights_only() -> frozenset[str]:
    from torch import _weights_only_unpickler

    return frozenset(_weights_only_unpickler._get_allowed_globals())


def _user_safe_globals() -> list[Any]:
    return [
        entry[0] if isinstance(entry, tuple) else entry
        for entry in torch.serialization.get_safe_globals()
    ]
