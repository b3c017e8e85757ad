"""Reading a net's nested levels: the ``__cuda_dependent_attributes__`` blob and tensor streams.

skorch keeps a net's modules, criteria and optimizers in one nested blob so that their
tensors can be mapped to another device. It has written three formats: a ``torch.save`` zip
(skorch <= 1.1, torch >= 1.6), the older ``torch.save`` stream that starts with torch's magic
number, and a plain pickle whose tensors are nested ``torch.save`` streams (skorch >= 1.2).
Each skorch release reads only its own; ``Reader`` reads all three.

With a policy, every level goes through the restricted unpickler (``Guarded``). Without one
(``weights_only=False``: the caller's statement of trust) it reads as upstream does.
``like_skorch`` is the policy of plain ``apply()``: restrict what skorch's own ``torch.load``
calls restrict, no more, so that the patch changes nothing skorch accepts.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from collections.abc import Callable
from typing import IO, Any, cast

from ..devices import net_device
from ..errors import UntrustedPickleError
from ..formats import BLOB
from ..legacy import upgrade_merged_state, upgrade_state
from .archive import refusals, storage_sizes
from .described import Storage
from .hook import guarding
from .inflating import opened
from .memoryfile import MemoryFile
from .policy import Policy, translated
from .unpickler import KWARGS_NOT_DICT, MERGED, Guarded, InPlace, merged_refusal, unfilled
from .verifier import (
    BLOB_LEVEL,
    NOT_BYTES,
    NOT_DICT,
    OUTER,
    TENSORS,
    ZIP_MAGIC,
    is_torch_save,
    unreadable,
)

TENSOR_STREAM = "torch.storage._load_from_bytes"  # how a pickled tensor nests its bytes
# From this size a blob holds tensors worth reading in place: below it, the copies cost less
# than MemoryFile's Python-level reads.
IN_PLACE_FROM = 1 << 20


def restore(
    net_module: types.ModuleType,
    net: Any,
    state: dict[str, Any],
    load_kwargs: dict[str, Any],
    where: str,
    policy: Policy | None,
    *,
    like_skorch: bool = False,
) -> None:
    """What ``NeuralNet.__setstate__`` does, reading the blob with ``Reader``.

    Where the blob is read restricted, the net's final attribute dict (the blob merged in,
    old state upgraded) is checked by the rules of BUILD just before it is installed: its
    keys reach the net, and no BUILD saw the blob's or ``_kwargs``'s. Without ``like_skorch``
    (``load()``, strict) the file's ``torch_load_kwargs`` never stay on the net, where a
    later ``load_params`` (``LoadInitState`` at ``fit``) would run with them: the caller's
    ``load_kwargs`` replace them (empty: None, the installed skorch's default).
    """
    if policy is not None and "_kwargs" in state and type(state["_kwargs"]) is not dict:
        kind = type(state["_kwargs"]).__name__  # legacy reads its items: a dict's own only
        raise UntrustedPickleError(where, {MERGED: f"{KWARGS_NOT_DICT}, not a {kind}"})
    upgrade_state(net, state)
    # skorch's own device logic, so its DeviceWarnings stay as they were; and load_onto().
    map_location = net_device(net_module, state)
    state["device"] = net._check_device(state["device"], map_location)
    reader = Reader(map_location, load_kwargs, where, policy, like_skorch=like_skorch)
    blob = state.pop(BLOB)
    restricted = reader.restricts(blob)
    attributes = reader.cuda_attributes(blob)
    state.update(attributes)
    upgrade_merged_state(state)
    if restricted:
        from_blob = [key for key in state if key in attributes]
        rest = [key for key in state if key not in attributes]
        refused = merged_refusal(type(net), [(BLOB_LEVEL, from_blob), (OUTER, rest)])
        if refused:
            raise UntrustedPickleError(where, refused)
    if not like_skorch and "torch_load_kwargs" in state:
        state["torch_load_kwargs"] = dict(load_kwargs) or None
    net.__dict__.update(state)


class Reader:
    """Loads a net's blob and tensor streams; ``policy`` None reads as upstream does.

    ``like_skorch``: with a policy, each level is restricted only where a ``torch.load`` of
    skorch's would be. A ``torch.save`` blob, which skorch <= 1.1 hands to ``torch.load``, is
    read by the restricted unpickler (what torch's weights-only one refuses in it is a net's
    own classes). A plain-pickle blob, which skorch 1.2-1.4 read with ``pickle``, is read
    with ``pickle``; its tensor streams go to ``torch.load`` with the caller's kwargs
    verbatim, so torch's own weights-only unpickler reads them, which allows only tensors and
    storages, as ours would. ``load()`` and strict mode restrict every level with ours.
    """

    def __init__(
        self,
        map_location: Any,
        load_kwargs: dict[str, Any],
        where: str,
        policy: Policy | None,
        *,
        like_skorch: bool = False,
    ) -> None:
        self.map_location, self.where, self.policy = map_location, where, policy
        self.kwargs, self.like_skorch = dict(load_kwargs), like_skorch

    def restricts(self, blob: Any) -> bool:
        """Whether ``blob`` is read by the restricted unpickler (else as upstream does)."""
        return self.policy is not None and not (self.like_skorch and not is_torch_save(blob))

    def cuda_attributes(self, blob: bytes) -> dict[str, Any]:
        if not self.restricts(blob):
            return self._upstream(blob)  # type: ignore[no-any-return]
        if type(blob) not in (bytes, memoryview):  # the audit follows nothing else either
            what = f"a {type(blob).__name__} (in the {OUTER})"
            raise UntrustedPickleError(self.where, {NOT_BYTES: what})
        with guarding(self.where):
            if is_torch_save(blob):
                found = self._torch_load(blob, _blob_file(blob), BLOB_LEVEL)
            else:
                found = self.unpickler(_blob_file(blob), BLOB_LEVEL).load()
        if type(found) is not dict:  # restore() updates the net's state with it
            what = f"a {type(found).__name__} (in the {BLOB_LEVEL})"
            raise UntrustedPickleError(self.where, {NOT_DICT: what})
        return found

    def whole_file(self, data: bytes | memoryview) -> Any:
        """A file as ``load()`` takes it: ``torch.save``'s read as ``torch.load`` would (never
        its dispatch); else its pickle, compressed or not, with joblib's arrays."""
        from ..content import readable

        content = readable(data)
        if content.torch_save:
            return self._torch_load(data, MemoryFile(data), OUTER)
        file = opened(data, content.compression)
        return self.unpickler(file, OUTER, arrays_follow=True).load()

    def unpickler(self, file: Any, level: str, **kwargs: Any) -> Guarded:
        assert self.policy is not None
        return Guarded(file, self.policy, self.where, level, self, **kwargs)

    def stream(self, data: bytes | memoryview) -> Any:
        # A view of the blob (a large tensor) is read in place; bytes are shared by BytesIO.
        file = MemoryFile(data) if isinstance(data, memoryview) else io.BytesIO(data)
        if self.policy is None or self.like_skorch:
            import torch

            return torch.load(cast(IO[bytes], file), map_location=self.map_location, **self.kwargs)
        return self._torch_load(data, file, TENSORS)

    def restore_net(self, net: Any, state: dict[str, Any]) -> None:
        """A net nested in a guarded read is restored under the same policy, never its own."""
        owner = next(cls for cls in type(net).__mro__ if "__setstate__" in vars(cls))
        if owner.__module__ != "skorch.net" or owner.__qualname__ != "NeuralNet":
            raise pickle.UnpicklingError(
                f"{self.where}: {owner.__qualname__} overrides __setstate__, which a guarded "
                "load cannot follow; load the file with pickle.load inside "
                "skorch_loadfix.torch_load_kwargs(weights_only=False) if you trust it"
            )
        restore(sys.modules["skorch.net"], net, state, self.kwargs, self.where, self.policy)

    def _torch_load(self, data: bytes | memoryview, file: Any, level: str) -> Any:
        """``torch.load``'s own two readers, with our unpickler, but never its dispatch.

        ``torch.load`` reads the bytes again to choose a reader, and hands a zip holding
        TorchScript to ``torch.jit.load``, which runs code in C++. The bytes may be a map of
        a file someone else can write, so checking them first would not do: whatever they
        say by the time torch reads them, only the reader chosen here runs.
        """
        import torch
        from torch import serialization

        # Both readers, as torch.load calls them (torch 2.0 to 2.14), are untyped.
        legacy: Callable[..., Any] = serialization._legacy_load
        zipped: Callable[..., Any] = serialization._load
        if bytes(data[:4]) != ZIP_MAGIC:  # the stream torch < 1.6 wrote
            module = _pickle_module(self, level, len(data), None)
            return legacy(file, self.map_location, module, encoding="utf-8")
        with unreadable():  # a zip that zipfile can't parse, as load() says it
            refused = refusals(data, level)  # what the audit refuses too
        if refused:
            raise UntrustedPickleError(self.where, refused)
        with unreadable():
            reader = torch._C.PyTorchFileReader(file)
        module = _pickle_module(self, level, len(data), storage_sizes(data))
        return zipped(reader, self.map_location, module, encoding="utf-8")

    def _upstream(self, blob: bytes) -> Any:
        import torch

        if is_torch_save(blob):
            return torch.load(io.BytesIO(blob), map_location=self.map_location, **self.kwargs)
        file = _blob_file(blob)
        reader = _InPlaceStreams if isinstance(file, MemoryFile) else _Streams
        return reader(file, self).load()


def _blob_file(blob: bytes | memoryview) -> MemoryFile | io.BytesIO:
    """A large blob is read in place (its tensor streams as views, its storages copied
    straight into the tensors); a small one by BytesIO."""
    return MemoryFile(blob) if len(blob) >= IN_PLACE_FROM else io.BytesIO(blob)


class _Unrestricted:
    """``find_class`` as pickle's own, but tensor streams go to the reader."""

    def __init__(self, file: Any, reader: Reader) -> None:
        super().__init__(file)  # type: ignore[call-arg]
        self.tensor_stream = reader.stream  # one bound method: in-place reading checks identity

    def find_class(self, module: str, name: str) -> Any:
        if translated(module, name) == TENSOR_STREAM:
            return self.tensor_stream
        return super().find_class(module, name)  # type: ignore[misc]


class _Streams(_Unrestricted, pickle.Unpickler):
    """The C unpickler, for small blobs: below ``IN_PLACE_FROM`` copies cost less."""


class _InPlaceStreams(_Unrestricted, InPlace):
    """The pure-Python one, for a large blob: its tensor streams are read in place."""


def _pickle_module(
    reader: Reader, level: str, room: int, records: dict[str, int] | None
) -> types.ModuleType:
    """A stand-in for the ``pickle`` module, as ``torch.load(pickle_module=...)`` takes;
    ``room``: the bytes of the whole stream or zip, where its storages are; ``records``: a
    zip's storage sizes by key."""

    class LevelUnpickler(Guarded):
        """The object's pickle: storages come by persistent id."""

        torch_stream = True

        def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
            assert reader.policy is not None
            super().__init__(
                file,
                reader.policy,
                reader.where,
                level,
                reader,
                torch_stream=self.torch_stream,
                room=room,
                records=records,
                **kwargs,
            )

        def load(self) -> Any:
            found = super().load()
            if self.torch_stream:
                named.append(self.roots())
            return found

    class HeaderUnpickler(LevelUnpickler):
        """The old stream's magic number, protocol, sys_info and storage keys: no ids."""

        torch_stream = False

    named: list[dict[str, Storage]] = []  # the storages the object's pickle read, once run

    def load(file: IO[bytes], **kwargs: Any) -> Any:
        found = HeaderUnpickler(file, **kwargs).load()
        refused = unfilled(named[-1], found, level, file) if named else {}  # after the object
        if refused:
            raise UntrustedPickleError(reader.where, refused)
        return found

    module = types.ModuleType("skorch_loadfix.guarded_pickle")
    module.Unpickler = LevelUnpickler  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    return module
