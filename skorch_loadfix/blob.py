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

import io
import pickletools
import types
from collections.abc import Callable
from typing import IO, Any, cast

import torch

from .allowlist import Policy, python3_name
from .errors import UntrustedPickleError
from .formats import BLOB
from .unpickling import MemoryFile, Unpickler

ZIP_MAGIC = b"PK\x03\x04"
TENSOR_STREAM = ("torch.storage", "_load_from_bytes")  # how a pickled tensor nests its bytes
BLOB_LEVEL, TENSORS = "cuda-attributes blob", "tensor streams"


def restore(
    net_module: types.ModuleType,
    net: Any,
    state: dict[str, Any],
    load_kwargs: dict[str, Any],
    where: str,
    policy: Policy | None,
) -> None:
    """What ``NeuralNet.__setstate__`` does, reading the blob with ``Reader``."""
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
        if policy is not None:
            self.kwargs["weights_only"] = False  # the guarded pickle module restricts instead

    def cuda_attributes(self, blob: bytes) -> dict[str, Any]:
        file = MemoryFile(blob)
        if is_torch_save(blob):
            return self._torch_load(file, BLOB_LEVEL)  # type: ignore[no-any-return]
        return _Unpickler(file, self, BLOB_LEVEL).load()  # type: ignore[no-any-return]

    def _stream(self, data: bytes | memoryview) -> Any:
        return self._torch_load(MemoryFile(data), TENSORS)

    def resolve(self, module: str, name: str, level: str) -> Any:
        """What a global at ``level`` names, if the policy allows it; tensors go to ``stream``."""
        if python3_name(module, name) == TENSOR_STREAM:
            return self.stream
        assert self.policy is not None
        why = self.policy.refusal(module, name)
        if why is not None:
            full_name = ".".join(python3_name(module, name))
            raise UntrustedPickleError(self.where, {full_name: f"{why} (in the {level})"})
        return self.policy.resolve(module, name)

    def _torch_load(self, file: MemoryFile, level: str) -> Any:
        kwargs = dict(self.kwargs)
        if self.policy is not None:
            kwargs["pickle_module"] = _pickle_module(self, level)
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


class _Unpickler(Unpickler):
    def __init__(
        self, file: IO[bytes] | MemoryFile, reader: Reader, level: str, **kwargs: Any
    ) -> None:
        super().__init__(file, **kwargs)
        self._reader, self._level = reader, level
        self.tensor_stream = reader.stream

    def find_class(self, module: str, name: str) -> Any:
        if self._reader.policy is None and python3_name(module, name) != TENSOR_STREAM:
            return super().find_class(module, name)
        return self._reader.resolve(module, name, self._level)


def _pickle_module(reader: Reader, level: str) -> types.ModuleType:
    """A stand-in for the ``pickle`` module, as ``torch.load(pickle_module=...)`` takes."""

    class Unpickler(_Unpickler):
        def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
            super().__init__(file, reader, level, **kwargs)

    module = types.ModuleType("skorch_loadfix.guarded_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kwargs: Unpickler(file, **kwargs).load()  # type: ignore[attr-defined]
    return module
