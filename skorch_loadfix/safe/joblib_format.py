"""joblib's arrays: a ``NumpyArrayWrapper`` in the pickle, the array's raw bytes right after.

``joblib.dump`` pickles each numpy array as a wrapper whose BUILD state describes it
(subclass, shape, order, dtype, allow_mmap, alignment), then writes a padding byte, that
many padding bytes and the array's bytes outside any pickle frame; an object array is
instead a nested pickle there (joblib's ``NumpyArrayWrapper.read_array``). joblib's own
reader calls ``read`` on whatever the file BUILT: here the wrapper is never resolved as a
class (joblib stays on the hard blocklist). The unpickler recognizes the name and makes an
``ArrayWrapper``, with no behaviour; on its one BUILD the state is checked as data, and
the array is read from the bytes that follow into a fresh array of a fresh dtype made
from the checked description. The audit checks the same description and skips the same
bytes, so it agrees with the loader byte for byte.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Any, Literal

from .described import DType
from .memoryfile import MemoryFile
from .policy import Entry, Facts

WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
WRAPPER_ENTRY = Entry(WRAPPER, "class")  # created by NEWOBJ without arguments, built once
_KEYS = {"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"}
_REQUIRED = _KEYS - {"numpy_array_alignment_bytes"}  # joblib < 1.2 wrote no alignment
_SUBCLASSES = {"numpy.ndarray", "numpy.memmap", "numpy.matrix"}  # read as an ndarray, as
# joblib does on numpy 2 (no __array_prepare__ there)
_MAX_ALIGNMENT = 64  # joblib writes 16; the padding byte can't say more than 255 anyway


class ArrayWrapper:
    """What the file's ``NumpyArrayWrapper`` is while it loads: a place for its state."""


@dataclass(frozen=True)
class Description:
    """A checked description of one array: what numpy is asked to make, nothing more."""

    dtype: str  # a dtype string numpy reads back as itself, e.g. '<f4', '|b1', '<U3', '|O'
    itemsize: int
    shape: tuple[int, ...]
    order: Literal["C", "F"]
    alignment: int | None  # a padding byte, and up to this many bytes, come first

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.itemsize

    @property
    def objects(self) -> bool:
        """An object array: joblib pickles it after the wrapper, with pickle."""
        return self.dtype == "|O"


def describe(facts: Facts, state: Any, dtype: DType | None) -> Description | str:
    """The array ``state`` describes, or why it is refused.

    ``dtype``: the description of the state's dtype, made and built in this load
    (``numpy.dtype(name, align, copy)`` then BUILD), as the loader and the audit both check
    it: a plain number, bool, bytes or str dtype, or the object dtype.
    """
    if type(state) is not dict or not _REQUIRED <= set(state) <= _KEYS:
        return f"a NumpyArrayWrapper's state is a dict of {sorted(_KEYS)}"
    subclass = facts.named(state["subclass"])
    if subclass is None or subclass.name not in _SUBCLASSES:
        return f"a NumpyArrayWrapper's subclass must be one of {sorted(_SUBCLASSES)}"
    shape, order = state["shape"], state["order"]
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape):
        return "a NumpyArrayWrapper's shape must be a tuple of ints >= 0"
    if type(order) is not str or order not in ("C", "F") or type(state["allow_mmap"]) is not bool:
        return "a NumpyArrayWrapper's order must be 'C' or 'F', and allow_mmap a bool"
    alignment = state.get("numpy_array_alignment_bytes")
    if alignment is not None and (
        type(alignment) is not int or not 0 < alignment <= _MAX_ALIGNMENT
    ):
        return f"a NumpyArrayWrapper's alignment must be an int from 1 to {_MAX_ALIGNMENT}"
    found = _dtype(dtype) if facts.created(state["dtype"]) == "numpy.dtype" else None
    if found is None:
        return (
            "a NumpyArrayWrapper's dtype must be made in this load, as numpy pickles a plain "
            "number, bool, bytes, str or object dtype"
        )
    # numpy's own limits, so that the audit refuses what numpy.empty would: 64 dimensions,
    # and a size in bytes (zeros aside) that fits its index type.
    if len(shape) > 64 or math.prod(max(n, 1) for n in shape) * found[1] >= 1 << 63:
        return "a NumpyArrayWrapper's shape is larger than numpy makes an array"
    return Description(*found, shape, "C" if order == "C" else "F", alignment)


def _dtype(dtype: DType | None) -> tuple[str, int] | None:
    """The dtype string and item size of a plain dtype built in this load (its state checked
    against numpy's own by ``described``): a number, bool, bytes, str or the object dtype."""
    if dtype is None or not dtype.built or dtype.kind not in "biufcSUO":
        return None
    return ("|O" if dtype.kind == "O" else dtype.spelling()), dtype.size


def padding(file: Any, description: Description) -> None:
    """joblib >= 1.2 aligns the array: one byte says how many padding bytes follow."""
    if description.alignment is None:
        return
    (length,) = _exactly(file, 1)
    if length > description.alignment:
        raise pickle.UnpicklingError(
            f"a joblib array's padding ({length} bytes) is longer than its alignment"
        )
    _exactly(file, length)


def _exactly(file: Any, size: int) -> bytes:
    data: bytes = file.read(size)
    if len(data) != size:
        raise pickle.UnpicklingError(truncated(size, len(data)))
    return data


def truncated(wanted: int, got: int) -> str:
    return f"a joblib array announces {wanted} bytes, but the file holds {got}: truncated"


def available(file: Any, size: int) -> None:
    """Refuses, before anything is allocated, an array larger than the file holds."""
    if isinstance(file, MemoryFile) and file.remaining() < size:
        raise pickle.UnpicklingError(truncated(size, file.remaining()))


def read_array(file: Any, description: Description) -> Any:
    """A fresh array of a fresh dtype, filled from the file, in joblib's layout.

    From a ``MemoryFile`` (a mapped file) the bytes are copied straight into the array, and
    the pages handed back as it goes. A compressed file's size is known only by
    decompressing it: its bytes are gathered as they come (``Inflating.view``), so an array
    announced larger than the stream yields costs what it yielded, then the array is made.
    """
    import numpy

    available(file, description.nbytes)
    data = None if isinstance(file, MemoryFile) else file.view(description.nbytes)
    dtype = numpy.dtype(description.dtype)
    array = numpy.empty(description.shape, dtype, order=description.order)
    if description.nbytes:
        # joblib writes the bytes in the array's order: its memory as it lies (a transposed
        # Fortran array is C-contiguous). The array owns exactly them.
        target = (array.T if description.order == "F" else array).data.cast("B")
        if data is not None:
            target[:] = data
        elif file.readinto(target) != description.nbytes:
            raise pickle.UnpicklingError(truncated(description.nbytes, 0))
    if not dtype.isnative:  # as joblib.load does by default
        array = array.astype(dtype.newbyteorder("="))
    return array


def skip_array(file: Any, description: Description) -> None:
    """The audit's reading: the same checks, the bytes passed over, nothing allocated."""
    available(file, description.nbytes)
    left = description.nbytes
    while left:
        got = len(file.read(min(left, 1 << 20)))
        if not got:
            raise pickle.UnpicklingError(truncated(description.nbytes, description.nbytes - left))
        left -= got
