"""Reading the ``__cuda_dependent_attributes__`` blob of a pickled skorch net.

skorch keeps a net's modules, criteria and optimizers in one nested blob so that
their tensors can be mapped to another device. It has written three formats:
a ``torch.save`` zip (skorch <= 1.1, torch >= 1.6), the older ``torch.save``
stream that starts with torch's magic number, and a plain pickle whose tensors are
nested ``torch.save`` streams (skorch >= 1.2). Each skorch release reads only its
own; this reader reads all three. Given a ``Policy``, every global at every level
goes through it, where upstream restricts the nested tensor streams alone.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import pickletools
import types
from collections.abc import Callable
from typing import IO, Any, cast

import torch

from .allowlist import Policy, python3_name
from .errors import UntrustedPickleError
from .formats import BLOB
from .legacy import upgrade_state
from .unpickling import MemoryFile, Unpickler

ZIP_MAGIC = b"PK\x03\x04"
TENSOR_STREAM = ("torch.storage", "_load_from_bytes")  # how a pickled tensor nests its bytes
BLOB_LEVEL, TENSORS = "cuda-attributes blob", "tensor streams"
# From this size a blob holds tensors worth reading in place, by the slower pure-Python
# unpickler: below it, the copies cost less than the interpreter.
IN_PLACE_FROM = 1 << 20


def restore(
    net_module: types.ModuleType,
    net: Any,
    state: dict[str, Any],
    load_kwargs: dict[str, Any],
    where: str,
    policy: Policy | None,
) -> None:
    """What ``NeuralNet.__setstate__`` does, reading the blob with ``Reader``."""
    upgrade_state(net, state)
    # skorch's own device logic, so its DeviceWarnings stay as they were.
    map_location = net_module.get_map_location(state["device"])
    state["device"] = net._check_device(state["device"], map_location)
    reader = Reader(map_location, load_kwargs, where, policy)
    state.update(reader.cuda_attributes(state.pop(BLOB)))
    net.__dict__.update(state)


class Reader:
    """Loads a net's nested pickles and tensor streams; ``policy`` None resolves any global."""

    def __init__(
        self, map_location: Any, load_kwargs: dict[str, Any], where: str, policy: Policy | None
    ) -> None:
        self.map_location, self.where, self.policy = map_location, where, policy
        # One bound method, so that unpicklers can recognise it by identity.
        self.stream: Callable[[bytes | memoryview], Any] = self._stream
        self.kwargs = dict(load_kwargs)
        self._resolved: dict[tuple[str, str], Any] = {}
        # The C unpickler hands back what a registered copyreg extension code resolved to
        # from a process-wide cache, without asking find_class. With none registered (the
        # default) it is safe, and faster than the pure-Python one.
        self._exact = bool(copyreg._inverted_registry or copyreg._extension_cache)  # type: ignore[attr-defined]
        if policy is not None:
            self.kwargs["weights_only"] = False  # the guarded pickle module restricts instead
            base = _InPlace if self._exact else _Fast
            self._pickle_modules = {
                level: _pickle_module(self, level, base) for level in (BLOB_LEVEL, TENSORS)
            }

    def cuda_attributes(self, blob: bytes) -> dict[str, Any]:
        if is_torch_save(blob):
            return self._torch_load(io.BytesIO(blob), BLOB_LEVEL)  # type: ignore[no-any-return]
        if self._exact or len(blob) >= IN_PLACE_FROM:
            return _InPlace(MemoryFile(blob), self, BLOB_LEVEL).load()  # type: ignore[no-any-return]
        return _Fast(io.BytesIO(blob), self, BLOB_LEVEL).load()  # type: ignore[no-any-return]

    def _stream(self, data: bytes | memoryview) -> Any:
        # A view of the blob (a large tensor) is read in place; bytes are shared by BytesIO.
        file = MemoryFile(data) if isinstance(data, memoryview) else io.BytesIO(data)
        return self._torch_load(file, TENSORS)

    def resolve(self, module: str, name: str, level: str) -> Any:
        """What a global at ``level`` names, if the policy allows it; tensors go to ``stream``."""
        key = python3_name(module, name)
        if key == TENSOR_STREAM:
            return self.stream
        if key not in self._resolved:  # a net names the same few globals many times
            assert self.policy is not None
            why = self.policy.refusal(*key)
            if why is not None:
                raise UntrustedPickleError(self.where, {".".join(key): f"{why} (in the {level})"})
            self._resolved[key] = self.policy.resolve(*key)
        return self._resolved[key]

    def _torch_load(self, file: MemoryFile | io.BytesIO, level: str) -> Any:
        kwargs = dict(self.kwargs)
        if self.policy is not None:
            kwargs["pickle_module"] = self._pickle_modules[level]
        return torch.load(cast(IO[bytes], file), map_location=self.map_location, **kwargs)


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


class _Guarded:
    """``find_class`` for one level of a ``Reader``, over either unpickler below."""

    tensor_stream: Callable[[Any], Any] | None

    def __init__(self, file: Any, reader: Reader, level: str, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)  # type: ignore[call-arg]
        self._reader, self._level = reader, level
        self.tensor_stream = reader.stream

    def find_class(self, module: str, name: str) -> Any:
        if self._reader.policy is None and python3_name(module, name) != TENSOR_STREAM:
            return super().find_class(module, name)  # type: ignore[misc]
        return self._reader.resolve(module, name, self._level)


class _Fast(_Guarded, pickle.Unpickler):
    """The C unpickler: for small pickles, and only while no copyreg extension is registered."""


class _InPlace(_Guarded, Unpickler):
    """The pure-Python one: large tensors read in place, extension codes always checked."""


def _pickle_module(reader: Reader, level: str, base: type[_Guarded]) -> types.ModuleType:
    """A stand-in for the ``pickle`` module, as ``torch.load(pickle_module=...)`` takes."""

    class LevelUnpickler(base):  # type: ignore[valid-type,misc]
        def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
            super().__init__(file, reader, level, **kwargs)

    module = types.ModuleType("skorch_loadfix.guarded_pickle")
    module.Unpickler = LevelUnpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kwargs: LevelUnpickler(file, **kwargs).load()  # type: ignore[attr-defined]
    return module
