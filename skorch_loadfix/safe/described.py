"""What a C-backed object may be, as a checked description both the audit and the loader share.

numpy's and torch's C code trusts the state it is handed: a dtype's flags and item size, an
array's shape against its bytes, a tensor's sizes and strides against its storage, the
element count a storage is allocated with. So a pickle never hands them a state: each call
and BUILD is checked here into a description, statically (nothing is imported, the audit
runs the very same code), and the loader builds the object from the description alone
(``rebuild``). Bounds, each against overflow or an allocation the file did not pay for:

- a dtype is one numpy pickles for the dtypes nets hold: no fields, subarrays or metadata;
  its item size at most ``2**31 - 1`` (numpy's own limit);
- an array or scalar gets exactly the bytes its shape and dtype need, an object array a
  list of exactly its element count; sizes, strides, offsets and element counts are below
  ``2**63`` (int64: torch's and numpy's) and at most 64 dimensions;
- a storage is allocated with at most as many bytes as the level it is read from holds
  (``room``): torch allocates ``numel x element size`` before it reads the data.
"""

from __future__ import annotations

import array
import re
import sys
from dataclasses import dataclass
from math import prod
from typing import Any

INT64 = 1 << 63
MAX_DIMS = 64
MAX_ITEMSIZE = (1 << 31) - 1

# kind -> item sizes numpy pickles for it (a name is kind + item size: 'f8', 'c16').
_NUMBERS = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8, 16), "c": (8, 16, 32)}
_FLEXIBLE = re.compile(r"([SUV])(0|[1-9][0-9]{0,9})")
_TIME_UNITS = {b"Y", b"M", b"W", b"D", b"h", b"m", b"s", b"ms", b"us", b"ns", b"ps", b"fs"}
_TIME_UNITS |= {b"as", b"generic"}


@dataclass(frozen=True)
class DType:
    """A numpy dtype as numpy pickles it: ``numpy.dtype(name, align, True)``, then BUILD.

    ``order`` and the datetime ``unit``/``count`` come from the BUILD; ``built`` once it ran.
    """

    kind: str
    size: int  # the item size in bytes
    order: str = ""
    unit: bytes = b""
    count: int = 1
    built: bool = False

    @property
    def hasobject(self) -> bool:
        return self.kind == "O"

    def spelling(self) -> str:
        """What ``numpy.dtype()`` takes to build this dtype fresh."""
        if self.kind in "Mm":
            unit = "" if self.unit == b"generic" else f"[{self.count}{self.unit.decode()}]"
            return f"{self.order}{self.kind}8{unit}"
        size = self.size // 4 if self.kind == "U" else self.size
        return f"{self.order}{self.kind}{size}"

    def state(self) -> tuple[Any, ...]:
        """The state numpy pickles for this dtype (``dtype.__reduce__()[2]``)."""
        if self.kind in "Mm":
            metadata = (None, (self.unit, self.count, 1, 1))
            return (4, self.order, None, None, None, -1, -1, 0, metadata)
        if self.kind in "SV":
            return (3, "|", None, None, None, self.size, 1, 0)
        if self.kind == "U":
            return (3, self.order, None, None, None, self.size, 4, 8)
        if self.kind == "O":
            return (3, "|", None, None, None, -1, -1, 63)
        return (3, self.order, None, None, None, -1, -1, 0)

    def build(self, state: Any) -> DType | str:
        """This dtype as the BUILD ``state`` makes it, or why that state is refused."""
        if self.built:
            return "a dtype is built once: numpy would change it under what already uses it"
        if type(state) is not tuple or len(state) not in (8, 9):
            return "its state must be the tuple numpy pickles"
        order = state[1]
        if not self._orders():
            order = "|"
        elif order not in ("<", ">"):
            return "its byte order must be '<' or '>'"
        unit, count = b"", 1
        if self.kind in "Mm":
            metadata = state[8] if len(state) == 9 else None
            inner = metadata[1] if type(metadata) is tuple and len(metadata) == 2 else None
            if type(inner) is not tuple or len(inner) != 4 or type(inner[0]) is not bytes:
                return "a datetime dtype's unit must be one numpy pickles"
            unit, count = inner[0], inner[1]
            if unit not in _TIME_UNITS:
                return "a datetime dtype's unit must be one numpy pickles"
            if type(count) is not int or not 0 < count < 1 << 31:
                return "a datetime dtype's unit count must be a positive int"
        built = DType(self.kind, self.size, order, unit, count, built=True)
        if not _same(state, built.state()):
            return f"its state must be the one numpy pickles for {built.spelling()!r}"
        return built

    def _orders(self) -> bool:
        return self.kind not in "SVO" and not (self.kind in "biu" and self.size == 1)


def _same(found: Any, expected: tuple[Any, ...]) -> bool:
    """``found == expected``, compared only as deep as ``expected`` goes (no shared-list
    DAG the file built is walked), and with exact types (True is not 1)."""
    if type(found) is not type(expected):
        return False
    if type(expected) is tuple:
        return len(found) == len(expected) and all(map(_same, found, expected))
    return bool(found == expected)


def dtype_named(name: Any) -> DType | None:
    """The dtype ``numpy.dtype(name, align, True)`` makes, for a ``name`` numpy pickles."""
    if type(name) is not str:
        return None
    kind, digits = name[:1], name[1:]
    if digits.isdigit() and digits.isascii() and int(digits) in _NUMBERS.get(kind, ()):
        return DType(kind, int(digits))
    if name in ("O8", "M8", "m8"):
        return DType(name[0], 8)
    flexible = _FLEXIBLE.fullmatch(name)
    if flexible is None or int(flexible[2]) > MAX_ITEMSIZE // (4 if kind == "U" else 1):
        return None
    return DType(kind, int(flexible[2]) * (4 if kind == "U" else 1))


@dataclass(frozen=True)
class Array:
    """A numpy array: ``_reconstruct`` makes an empty one, and one BUILD fills it."""

    built: bool = False

    def build(self, state: Any, dtype: DType | None) -> tuple[tuple[int, ...], bool] | str:
        """(shape, fortran) of the array ``state`` describes, ``dtype`` its described dtype."""
        if self.built:
            return "an array is built once"
        if type(state) is not tuple or len(state) != 5:
            return "takes (version, shape, dtype, fortran, data)"
        version, shape, _, fortran, data = state
        if type(version) is not int or version != 1 or type(fortran) is not bool:
            return "its version must be 1 and its order a bool"
        if dtype is None or not dtype.built:
            return "its dtype must be a numpy dtype built in this load"
        why = shape_error(shape)
        if why is not None:
            return why
        count = prod(shape)
        if dtype.hasobject:
            if type(data) is not list or len(data) != count:
                return f"an object array's data must be a list of its {count} elements"
        elif type(data) is not bytes or len(data) != count * dtype.size:
            return f"its data must be exactly the {count * dtype.size} bytes its shape needs"
        return tuple(shape), fortran


def shape_error(shape: Any) -> str | None:
    """Why ``shape`` is no shape: ints from 0, at most 64 of them, fewer than 2**63 elements."""
    if type(shape) not in (tuple, list) or len(shape) > MAX_DIMS:
        return f"its shape must be a tuple of at most {MAX_DIMS} ints"
    if not all(type(n) is int and 0 <= n < INT64 for n in shape) or prod(shape) >= INT64:
        return "its shape must be ints from 0, fewer than 2**63 elements in all"
    return None


def buffer_error(data: Any, dtype: DType | None, shape: Any) -> str | None:
    """Why ``data`` is not exactly the bytes an array or scalar of ``dtype`` and ``shape``
    needs (raw bytes are never read through the object dtype)."""
    if dtype is None or not dtype.built:
        return "its dtype must be a numpy dtype built in this load"
    if dtype.hasobject:
        return "raw bytes are never read as Python objects (the object dtype)"
    why = shape_error(shape)
    if why is not None:
        return why
    needed = prod(shape) * dtype.size
    if type(data) not in (bytes, bytearray) or len(data) != needed:
        return f"it takes exactly the {needed} bytes its shape and dtype need"
    return None


def scalar_error(data: Any, dtype: DType | None) -> str | None:
    """Why ``data`` is no scalar of ``dtype``: ``buffer_error``'s, or, for text, a code point
    beyond Unicode's (numpy would fail to make the ``str``)."""
    why = buffer_error(data, dtype, ())
    if why is not None or dtype is None or dtype.kind != "U":
        return why
    codes = array.array("I", data)  # 4-byte units on every platform numpy supports
    if dtype.order != ("<" if sys.byteorder == "little" else ">"):
        codes.byteswap()
    return "its text must be Unicode code points" if max(codes, default=0) > 0x10FFFF else None


# torch's StorageType(name) knows exactly these (torch.storage._storage_type_to_dtype_map):
# name -> (element size, float or complex: may require grad, quantized: never rebuilt here).
STORAGE_TYPES: dict[str, tuple[int, bool, bool]] = {
    "DoubleStorage": (8, True, False),
    "FloatStorage": (4, True, False),
    "HalfStorage": (2, True, False),
    "BFloat16Storage": (2, True, False),
    "ComplexDoubleStorage": (16, True, False),
    "ComplexFloatStorage": (8, True, False),
    "LongStorage": (8, False, False),
    "IntStorage": (4, False, False),
    "ShortStorage": (2, False, False),
    "CharStorage": (1, False, False),
    "ByteStorage": (1, False, False),
    "BoolStorage": (1, False, False),
    "QInt8Storage": (1, False, True),
    "QInt32Storage": (4, False, True),
    "QUInt8Storage": (1, False, True),
    "QUInt4x2Storage": (1, False, True),
    "QUInt2x4Storage": (1, False, True),
}


@dataclass(frozen=True)
class Storage:
    """A storage torch's persistent_load returns: its type's name and element count."""

    kind: str
    numel: int

    @property
    def differentiable(self) -> bool:
        return STORAGE_TYPES[self.kind][1]


def storage_id(
    pid: tuple[Any, ...], kind: str | None, room: int, records: dict[str, int] | None
) -> tuple[Storage, str] | str:
    """The storage a ``('storage', type, key, location, numel[, view])`` id makes, and the key
    torch files it under; or why it is refused. ``kind``: the StorageType's name, if it is one.

    torch allocates ``numel x element size`` bytes before it reads the data: never more than
    the ``room`` bytes the level holds. In a zip (``records``: each storage record's size by
    its key) torch reads a storage only if its record has exactly that size.
    """
    if kind is None or kind not in STORAGE_TYPES or STORAGE_TYPES[kind][2]:
        return "its storage type must be one torch names for a tensor's (not quantized)"
    length = 6 if records is None else 5  # the old stream's ids end with a view, or None
    if len(pid) != length or type(pid[2]) is not str or type(pid[3]) is not str:
        return "takes ('storage', type, key, location, numel), and a view in an old stream"
    numel, size = pid[4], STORAGE_TYPES[kind][0]
    if type(numel) is not int or numel < 0 or numel * size > room:
        return f"its element count must be from 0, and fit in the {room} bytes read here"
    if records is not None and records.get(pid[2]) != numel * size:
        return "its size must be its record's in the archive"
    view = pid[5] if records is None else None
    if view is None:
        return Storage(kind, numel), pid[2]
    if type(view) is not tuple or len(view) != 3 or type(view[0]) is not str:
        return "its view must be (key, offset, size)"
    _, offset, size = view
    if type(offset) is not int or type(size) is not int or not 0 <= offset <= offset + size:
        return "its view's offset and size must be ints from 0"
    if offset + size > numel:
        return "its view must lie inside its storage"
    return Storage(kind, size), view[0]


@dataclass(frozen=True)
class Tensor:
    """A tensor ``_rebuild_tensor_v2`` made: whether it may require grad."""

    differentiable: bool


def tensor_error(storage: Storage, offset: Any, size: Any, stride: Any, grad: Any) -> str | None:
    """Why sizes, strides and offset do not describe a view inside ``storage``."""
    if type(offset) is not int or type(grad) is not bool:
        return "offset and requires_grad must be an int and a bool"
    why = shape_error(size) or shape_error(stride)
    if why is not None or len(size) != len(stride):
        return "size and stride must be as many ints from 0, below 2**63"
    extent = 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if not 0 <= offset <= offset + extent <= storage.numel:
        return f"it must lie inside its storage of {storage.numel} elements"
    if grad and not storage.differentiable:
        return "only a float or complex tensor may require grad"
    return None


_DEVICE = re.compile(r"(cpu|cuda|mps|meta|xpu)(:(0|[1-9][0-9]?|1[01][0-9]|12[0-7]))?")


def device_error(args: tuple[Any, ...]) -> str | None:
    """Why ``torch.device(*args)`` is not a device torch reads: a type, an index below 128."""
    if len(args) in (1, 2) and type(args[0]) is str and _DEVICE.fullmatch(args[0]):
        index = args[1] if len(args) == 2 else 0
        if type(index) is int and 0 <= index < 128 and (len(args) == 1 or ":" not in args[0]):
            return None
    return "takes a device torch knows: cpu, cuda, mps, meta or xpu, and an index below 128"
