"""Reading the ``__cuda_dependent_attributes__`` blob of a pickled skorch net.

skorch keeps a net's modules, criteria and optimizers in one nested blob so that
their tensors can be mapped to another device. It has written three formats:
a ``torch.save`` zip (skorch <= 1.1, torch >= 1.6), the older ``torch.save``
stream that starts with torch's magic number, and a plain pickle whose tensors are
nested ``torch.save`` streams (skorch >= 1.2). Each skorch release reads only its
own; this reader reads all three. With ``weights_only=True`` it resolves only the
globals that modules, criteria and optimizers need, in every format, where
upstream restricts the nested tensor streams alone.
"""

from __future__ import annotations

import _compat_pickle
import collections
import importlib
import io
import pickle
import pickletools
import sys
import types
from collections.abc import Callable
from typing import Any

import torch

from .errors import UntrustedPickleError

ZIP_MAGIC = b"PK\x03\x04"

# Containers an optimizer's state is made of; torch's weights-only set lacks them.
_CONTAINERS = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("collections", "defaultdict"): collections.defaultdict,
}
_TORCH_PACKAGES = ("torch.nn", "torch.optim")


def read_cuda_attributes(
    blob: bytes, map_location: Any, load_kwargs: dict[str, Any], where: str
) -> dict[str, Any]:
    """Decode ``blob`` whatever skorch wrote it, loading every tensor with ``load_kwargs``."""
    kwargs = dict(load_kwargs)
    restricted = kwargs.pop("weights_only")
    file = io.BytesIO(blob)  # shares the bytes, no copy
    if is_torch_save(blob):
        # torch's own weights-only unpickler refuses an optimizer's defaultdict;
        # a restricted pickle module gives the same guarantee with our allowlist.
        module = _restricted_pickle_module(where) if restricted else pickle
        attributes: dict[str, Any] = torch.load(
            file, map_location=map_location, weights_only=False, pickle_module=module, **kwargs
        )
        return attributes

    def load_tensor_stream(data: bytes) -> Any:
        return torch.load(io.BytesIO(data), map_location=map_location, **load_kwargs)

    attributes = _BlobUnpickler(file, where, restricted, load_tensor_stream).load()
    return attributes


def is_torch_save(blob: bytes) -> bool:
    """Whether ``blob`` was written by ``torch.save`` (zip or legacy stream), not ``pickle``."""
    if blob[:4] == ZIP_MAGIC:
        return True
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(blob[:32])):
            if opcode.name != "PROTO":
                return bool(arg == torch.serialization.MAGIC_NUMBER)
    except ValueError:  # not a pickle at all: let the unpickler say so
        pass
    return False


class _BlobUnpickler(pickle.Unpickler):
    def __init__(
        self,
        file: io.BytesIO,
        where: str,
        restricted: bool,
        load_tensor_stream: Callable[[bytes], Any],
    ) -> None:
        super().__init__(file)
        self._where = where
        self._restricted = restricted
        self._load_tensor_stream = load_tensor_stream

    def find_class(self, module: str, name: str) -> Any:
        # skorch >= 1.2 nests each tensor as a torch.save stream behind this name.
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self._load_tensor_stream
        if self._restricted:
            return allowed_global(module, name, self._where)
        return super().find_class(module, name)


def _restricted_pickle_module(where: str) -> types.ModuleType:
    """A stand-in for the ``pickle`` module, as ``torch.load(pickle_module=...)`` takes."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return allowed_global(module, name, where)

    module = types.ModuleType("skorch_loadfix.weights_only_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kwargs: Unpickler(file, **kwargs).load()  # type: ignore[attr-defined]
    return module


def allowed_global(module: str, name: str, where: str) -> Any:
    """Resolve ``module.name`` if ``weights_only=True`` allows it in a blob, else refuse."""
    obj = weights_only_global(module, name)
    if obj is None:
        raise UntrustedPickleError(
            f"{where}: the pickled net needs {module}.{name}, which weights_only=True "
            f"does not allow. If the class is yours, register it with "
            f"torch.serialization.add_safe_globals([{name}]); if you trust the file, "
            "load it inside skorch_loadfix.torch_load_kwargs(weights_only=False)."
        )
    return obj


def weights_only_global(module: str, name: str) -> Any:
    """The object ``module.name`` names if ``weights_only=True`` allows it, else None.

    Allowed: torch's weights-only set and what the user registered with
    ``torch.serialization.add_safe_globals``; the containers of optimizer state;
    ``torch.nn`` and ``torch.optim`` classes; and subclasses of ``nn.Module``,
    ``Optimizer`` or ``LRScheduler`` from modules already imported (the outer
    pickle imported the net's own module classes, so their nested blocks resolve
    without importing anything new).
    """
    module, name = python3_name(module, name)
    if (module, name) in _CONTAINERS:
        return _CONTAINERS[module, name]
    if _in_torch_packages(module):
        obj = _lookup(_import_torch_module(module), name)
        if isinstance(obj, type) and _in_torch_packages(obj.__module__):
            return obj
    obj = _lookup(sys.modules.get(module), name)
    if obj is not None and (
        _is_torch_component(obj)
        or f"{module}.{name}" in _torch_weights_only_globals()
        or any(obj is safe for safe in _user_safe_globals())
    ):
        return obj
    return None


def python3_name(module: str, name: str) -> tuple[str, str]:
    """torch.save pickles at protocol 2, which spells some names as Python 2 did."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _in_torch_packages(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in _TORCH_PACKAGES)


def _import_torch_module(module: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _lookup(module: types.ModuleType | None, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split(".") if module is not None else ():
        obj = getattr(obj, part, None)
    return obj


def _is_torch_component(obj: Any) -> bool:
    bases = (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
    return isinstance(obj, type) and issubclass(obj, bases)


def _torch_weights_only_globals() -> set[str]:
    from torch import _weights_only_unpickler

    return set(_weights_only_unpickler._get_allowed_globals())


def _user_safe_globals() -> list[Any]:
    return [
        entry[0] if isinstance(entry, tuple) else entry
        for entry in torch.serialization.get_safe_globals()
    ]
