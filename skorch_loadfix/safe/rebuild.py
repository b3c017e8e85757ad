"""numpy and torch objects built from a checked description (``described``), for the loader.

A dtype gets the state numpy computes for a fresh dtype of its description, an array the
checked (shape, dtype, order, bytes), a protocol-5 array is copied out of its checked buffer
so that it owns exactly its bytes; a storage torch returns must be the one its id describes.
The file's own tuples never reach numpy's ``__setstate__``.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any

from .described import STORAGE_TYPES, DType, Storage


def dtype(inst: Any, built: DType) -> str | None:
    """Give ``inst`` numpy's own state for ``built``; why not, if numpy disagrees."""
    import numpy

    fresh = numpy.dtype(built.spelling())
    state = fresh.__reduce__()[2]
    if state != built.state() or type(inst) is not type(fresh):
        return f"numpy {numpy.__version__} pickles {built.spelling()!r} otherwise"
    type(inst).__setstate__(inst, state)  # type: ignore[attr-defined]
    same = inst == fresh and inst.itemsize == fresh.itemsize and inst.flags == fresh.flags
    return None if same and inst.byteorder == fresh.byteorder else "numpy built another dtype"


def array(
    inst: Any, shape: tuple[int, ...], fortran: bool, dtype: Any, data: Any, *masked: Any
) -> str | None:
    """Fill the empty array ``inst`` with the checked ``data`` (bytes or a list of objects);
    a masked array also with its checked mask bytes and fill value (``masked``), as
    ``MaskedArray.__setstate__`` would, but through ndarray's own setter for each part."""
    import numpy

    setstate: Any = numpy.ndarray.__setstate__  # numpy's stubs want its own scalar types
    setstate(inst, (1, shape, dtype, fortran, _private(data)))
    # numpy may swap a non-native byte order to the native one, as its own unpickling does
    same = inst.shape == shape and inst.dtype.itemsize == dtype.itemsize and _owns(inst)
    if masked:
        mask, fill = masked
        bools = (1, shape, numpy.dtype(bool), fortran, _private(mask))
        setstate(inst._mask, bools)
        inst.fill_value = fill
        same = same and inst._mask.shape == shape and _owns(inst._mask)
    return None if same else "numpy built another array"


def _private(data: Any) -> Any:
    """A copy of ``data``'s bytes that nothing else holds. numpy keeps bytes of over 1000
    as the array's buffer, writable, instead of copying them: the file's bytes object, which
    the memo can hand to anything else in the load (a dict key, a second array)."""
    return bytes(memoryview(data)) if type(data) is bytes else data


def _owns(array: Any) -> bool:
    """Its own memory, or a bytes object of exactly its size that nothing else holds."""
    base = array.base
    if array.flags.owndata or array.nbytes == 0:
        return True
    return type(base) is bytes and len(base) == array.nbytes and sys.getrefcount(base) == 3


def frombuffer(buffer: Any, dtype: Any, shape: Any, order: str, axis_order: Any = None) -> Any:
    """numpy's ``_frombuffer``, on checked arguments, copied so that the array owns its bytes
    (read-only where numpy's own would be: a bytes buffer). Without bytes (no elements, or
    item size 0, which ``numpy.frombuffer`` refuses) the array is shaped as numpy's own."""
    import numpy

    count = math.prod(shape)
    if count and dtype.itemsize:
        flat = numpy.frombuffer(buffer, dtype=dtype)
    else:
        flat = numpy.empty(count, dtype)
    if order == "K":
        shaped = flat.reshape(shape, order="C").transpose(axis_order)
    else:
        shaped = flat.reshape(shape, order=order)  # type: ignore[call-overload]
    result = shaped.copy(order="K") if shaped.nbytes else shaped
    result.flags.writeable = type(buffer) is not bytes
    return result


@functools.cache
def _storage_names() -> dict[Any, str]:
    import torch

    known = torch.storage._storage_type_to_dtype_map()
    return {dtype: name for name, dtype in known.items() if name in STORAGE_TYPES}


def storage_kind(obj: Any) -> str | None:
    """The name of the storage type torch's ``StorageType`` made ``obj`` for, if it did."""
    from torch.serialization import StorageType

    return _storage_names().get(obj.dtype) if type(obj) is StorageType else None


def described_storage(result: Any) -> Storage | None:
    """The description of a storage torch made, if it is one of a type ``described`` knows."""
    import torch

    if type(result) is not torch.storage.TypedStorage:
        return None
    kind = _storage_names().get(result.dtype)
    if kind is None:
        return None
    numel, left = divmod(result._untyped_storage.nbytes(), STORAGE_TYPES[kind][0])
    return None if left else Storage(kind, numel)


def storage_error(result: Any, storage: Storage) -> str | None:
    """Why ``result``, from torch's persistent_load, is not the storage ``storage`` describes."""
    if described_storage(result) != storage:
        return f"torch returned another storage than the {storage.numel} {storage.kind} named"
    return None
