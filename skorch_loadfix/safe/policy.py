"""What a pickle may name, and what each named object may do while it loads.

Every entry is a written ``module.qualname`` of one of three kinds:

- a *class*: it may be named, created with ``cls.__new__(cls)`` (NEWOBJ, no arguments) and built
  into with a dict of plain attribute names; only the classes below that say how may also be
  called with arguments, or take another state;
- a *function*: it may be called, with arguments its own check accepts; what it returns is
  known (``returns``), and where it could be made to call or change something it is replaced
  by a vetted substitute (``substitute``);
- a *constant*: it may be named and stored, never called or built into during the load.

Names come from ``published.txt`` (generated from public lists, see ``published.py``) and from
the tables here. Nothing is allowed by module or by base class, except ``imported_components``
(see ``Policy``). Resolution walks ``vars()`` and never triggers a module ``__getattr__``; the
object found must carry exactly the written name. The hard blocklist stays as an extra check.

Every check is linear and bounded: containers are walked once per load (``_walk``), no deeper
than ``MAX_DEPTH``; an int argument that sizes an allocation is at most the bytes of the level
being read (``Facts.room``), and shapes and sizes below 2**63 (``described``).
"""

from __future__ import annotations

import _compat_pickle
import functools
import importlib
import math
import re
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from .. import legacy
from .described import (
    INT64,
    Array,
    DType,
    Storage,
    Tensor,
    buffer_error,
    device_error,
    dtype_named,
    scalar_error,
    shape_error,
    tensor_error,
)
from .hook import resolving

Kind = Literal["class", "function", "constant"]
STORAGE = "torch.storage"  # what torch's persistent_load and a tensor stream create
OBJECT = "builtins.object"  # named by protocols 0 and 1, as copyreg._reconstructor's base
BOUND = "builtins.method"  # what the bound-method substitute creates
MASKED, MASKED_BUILDER = "numpy.ma.MaskedArray", "numpy.ma.core._mareconstruct"
# Substitutes that stand in for a name the blocklist keeps: its object is never looked up.
STAND_INS = {"method", "reconstructor", "base"}
TENSOR = "torch.Tensor"
REBUILD = "torch._utils._rebuild_tensor_v2"
PARAMETER = "torch.nn.parameter.Parameter"


class Facts(Protocol):
    """What an argument check may ask the unpickler about an object on its stack."""

    verdicts: dict[tuple[str, int], tuple[Any, int]]  # see _walk

    @property
    def room(self) -> int:
        """The bytes the level being read holds: no call allocates more on its say-so."""

    def created(self, obj: Any) -> str | None:
        """The class an earlier call of this load created ``obj`` as, if one did."""

    def named(self, obj: Any) -> Entry | None:
        """The entry ``obj`` was resolved as, if find_class returned it."""

    def empty(self, obj: Any) -> bool:
        """Whether ``obj`` is a dict-like made in this load that holds nothing."""

    def described(self, obj: Any) -> Any:
        """The checked description of a C-backed object this load made (``described``)."""


ArgCheck = Callable[[Facts, tuple[Any, ...]], str | None]  # why the call is refused, or None
Describe = Callable[[Facts, tuple[Any, ...]], Any]


@dataclass(frozen=True)
class Entry:
    name: str
    kind: Kind
    args: ArgCheck | None = None  # a class: may also be called with these; a function: required
    state: ArgCheck | None = None  # a class whose __setstate__ takes more than an attribute dict
    slotstate: bool = False
    container: Literal["dict", "list", "set"] | None = None
    returns: str | None = None  # a function: the class of what it creates, which may be built
    # What the unpickler calls instead: "latin1", "stream", "frombuffer", "sparse", "typed";
    # "bytes": the audit's too; or (STAND_INS) hands out for a blocked name: "method",
    # "reconstructor", "base".
    substitute: str | None = None
    hooks_at: int | None = None  # the backward-hooks argument, replaced by a fresh empty dict
    subtypes: bool = False  # a call may return an instance of a subclass (numpy dtypes)
    describe: Describe | None = None  # a C-backed result: its description, from checked args


# -- argument checks: each says why it refuses, or None ------------------------------------


MAX_DEPTH = 100  # containers in plain data nest at most this deep
_LITERALS = (type(None), str, bytes, int, float, complex, bool)
_CONTAINERS = (tuple, list, dict)


def _walk(
    facts: Facts,
    kind: str,
    root: Any,
    leaf: Callable[[Any], bool],
    containers: tuple[type, ...] = _CONTAINERS,
) -> bool:
    """Whether every item of ``root``'s ``containers`` (and ``root``) is a ``leaf``.

    Linear and bounded: each container is visited once per load, its height kept by
    identity in ``facts.verdicts`` (with the object, so that its id is never reused) until a
    fill changes a container; no recursion; nesting deeper than ``MAX_DEPTH`` or a cycle is
    refused. Dict keys must be plain.
    """
    heights = facts.verdicts
    visiting: set[int] = set()
    todo: list[tuple[Any, bool]] = [(root, False)]
    while todo:
        obj, done = todo.pop()
        if type(obj) not in containers:
            if not leaf(obj):
                return False
            continue
        key = (kind, id(obj))
        if key in heights:
            continue
        items = list(obj.values()) if type(obj) is dict else obj
        if done:
            visiting.discard(id(obj))
            below = [heights[(kind, id(i))][1] for i in items if type(i) in containers]
            if max(below, default=0) >= MAX_DEPTH:
                return False
            heights[key] = (obj, 1 + max(below, default=0))
            continue
        if id(obj) in visiting:
            return False  # a cycle
        if type(obj) is dict and kind != "plain" and not all(_plain(facts, k) for k in obj):
            return False
        visiting.add(id(obj))
        todo.append((obj, True))
        todo += [(item, False) for item in (obj if type(obj) is dict and kind == "plain" else ())]
        todo += [(item, False) for item in items]
    return True


def _literal(obj: Any) -> bool:
    return type(obj) in _LITERALS


def _plain(facts: Facts, obj: Any) -> bool:
    """Data that can neither be called nor run anything: literals and containers of them."""
    return _walk(facts, "plain", obj, _literal)


def _shape(*types_: tuple[type, ...] | Callable[[Any], bool]) -> ArgCheck:
    """Exactly these positional arguments: types, or a predicate."""

    def check(facts: Facts, args: tuple[Any, ...]) -> str | None:
        if len(args) != len(types_):
            return f"takes {len(types_)} arguments here, not {len(args)}"
        for i, (want, arg) in enumerate(zip(types_, args, strict=True)):
            ok = type(arg) in want if isinstance(want, tuple) else want(arg)
            if not ok:
                return f"argument {i} ({type(arg).__name__}) is not what it takes"
        return None

    return check


def _ints(obj: Any) -> bool:
    return type(obj) in (tuple, list) and all(type(i) is int for i in obj)


def _int64(obj: Any) -> bool:
    return type(obj) is int and -INT64 <= obj < INT64


def _bytearray(facts: Facts, args: tuple[Any, ...]) -> str | None:
    """As pickle spells one (bytes; latin-1 text at protocol 2), or ``bytearray(n)``: at most
    as many bytes as the level holds."""
    if len(args) == 0 or (len(args) == 1 and type(args[0]) is bytes):
        return None
    if len(args) == 1 and type(args[0]) is int and 0 <= args[0] <= facts.room:
        return None
    if len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1"):
        return None
    return f"takes bytes, latin-1 text, or a size of at most the {facts.room} bytes read here"


def _complex(facts: Facts, args: tuple[Any, ...]) -> str | None:
    numbers = (int, float, bool)
    if len(args) in (1, 2) and all(type(a) in numbers for a in args):
        return None
    return "takes one or two numbers"


def _range(facts: Facts, args: tuple[Any, ...]) -> str | None:
    """A range allocates nothing, but its length must fit in an int64 (``len()`` fails)."""
    if len(args) in (1, 2, 3) and all(map(_int64, args)) and (len(args) < 3 or args[2] != 0):
        return None
    return "takes one to three ints below 2**63, the step not 0"


def _slice(facts: Facts, args: tuple[Any, ...]) -> str | None:
    if len(args) in (1, 2, 3) and all(_plain(facts, a) for a in args):
        return None
    return "takes one to three arguments, plain data"


def _deque(facts: Facts, args: tuple[Any, ...]) -> str | None:
    """``deque(items[, maxlen])`` as it pickles: the length bound is at most the level's size
    (a deque allocates as it fills, but nothing larger is ever pickled)."""
    if len(args) not in (0, 1, 2) or (args and type(args[0]) not in (list, tuple)):
        return "takes a list and a maximum length"
    if args and not _plain(facts, args[0]):
        return "its items must be plain data"
    maxlen = args[1] if len(args) == 2 else None
    if maxlen is None or (type(maxlen) is int and 0 <= maxlen <= facts.room):
        return None
    return f"its maximum length must be from 0 to the {facts.room} bytes read here"


def _torch_size(facts: Facts, args: tuple[Any, ...]) -> str | None:
    return None if not args or (len(args) == 1 and shape_error(args[0]) is None) else "a shape"


def _device(facts: Facts, args: tuple[Any, ...]) -> str | None:
    return device_error(args)


def _sequence(facts: Facts, args: tuple[Any, ...]) -> str | None:
    if len(args) == 0 or (len(args) == 1 and type(args[0]) in (list, tuple)):
        return None
    return "takes nothing or one list or tuple made in this load"


def _mapping(facts: Facts, args: tuple[Any, ...]) -> str | None:
    if len(args) == 0 or (len(args) == 1 and type(args[0]) is dict):
        return None
    return "takes nothing or one dict made in this load"


def _hashables(facts: Facts, args: tuple[Any, ...]) -> str | None:
    """A set's items, as it pickles them: what hashes without running anything the file
    chose (literals, named classes and constants, tuples of them): a list or an instance
    would fail the load, or call its class's ``__hash__``."""

    def leaf(item: Any) -> bool:
        return _literal(item) or getattr(facts.named(item), "kind", "") in ("class", "constant")

    items = args[0] if len(args) == 1 and type(args[0]) in (list, tuple) else None
    if not args or (
        items is not None and all(_walk(facts, "hashable", i, leaf, (tuple,)) for i in items)
    ):
        return None
    return "takes nothing or one list of literals, named classes and tuples of them"


def _tensor(facts: Facts, args: tuple[Any, ...]) -> str | None:
    # (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
    if len(args) not in (6, 7):
        return f"takes 6 or 7 arguments, not {len(args)}"
    storage, offset, size, stride, grad, hooks, *metadata = args
    described = facts.described(storage)
    if facts.created(storage) != STORAGE or type(described) is not Storage:
        return "its storage must come from torch's storage protocol in this load"
    why = tensor_error(described, offset, size, stride, grad)
    if why is not None:
        return why
    if hooks is not None and not facts.empty(hooks):  # torch 1.0 passed None; both replaced
        return "backward hooks run later: only an empty dict is allowed"
    if metadata and not _tensor_metadata(metadata[0], described):
        return "its metadata must be torch's: {'conj': bool, 'neg': bool} of a complex tensor"
    return None


def _tensor_metadata(metadata: Any, storage: Storage) -> bool:
    if type(metadata) is not dict or not all(type(v) is bool for v in metadata.values()):
        return False
    return not metadata or (set(metadata) <= {"conj", "neg"} and "Complex" in storage.kind)


def _described_tensor(facts: Facts, args: tuple[Any, ...]) -> Tensor:
    return Tensor(facts.described(args[0]).differentiable)


def _described_typed(facts: Facts, args: tuple[Any, ...]) -> Tensor:
    """A tensor with Python attributes is the tensor its inner rebuild describes."""
    return _described_tensor(facts, args[2])


def _differentiable(facts: Facts, tensor: Any, grad: Any) -> bool:
    described = facts.described(tensor)
    return type(described) is Tensor and (grad is False or described.differentiable)


def _parameter(facts: Facts, args: tuple[Any, ...]) -> str | None:
    if len(args) != 3 or facts.created(args[0]) != TENSOR or type(args[1]) is not bool:
        return "takes a tensor made in this load, a bool and empty hooks"
    if not _differentiable(facts, args[0], args[1]):
        return "only a float or complex tensor may require grad"
    return None if facts.empty(args[2]) else "backward hooks run later: only an empty dict"


def _parameter_class(facts: Facts, args: tuple[Any, ...]) -> str | None:
    # torch < 1.1 pickled a parameter as Parameter(tensor, requires_grad).
    if len(args) in (1, 2) and facts.created(args[0]) == TENSOR and type(args[-1]) is bool:
        grad = args[-1] if len(args) == 2 else True
        ok = _differentiable(facts, args[0], grad)
        return None if ok else "only a float or complex tensor may require grad"
    return "takes a tensor made in this load and a bool"


def _never(facts: Facts, state: Any) -> str | None:
    return "it is never built into"


def _reconstructed(facts: Facts, args: tuple[Any, ...]) -> str | None:
    return "an array is made by numpy's _reconstruct only, and filled by one BUILD"


def _reconstruct(facts: Facts, args: tuple[Any, ...]) -> str | None:
    # numpy pickles every array as _reconstruct(ndarray, (0,), b'b'), an empty one, then BUILD.
    entry = facts.named(args[0]) if args else None
    if len(args) != 3 or entry is None or entry.name != "numpy.ndarray":
        return "creates numpy.ndarray only"
    shape, typecode = args[1:]
    ok = type(shape) in (tuple, list) and list(shape) == [0] and type(shape[0]) is int
    return None if ok and typecode == b"b" else "takes the shape (0,) and b'b', as numpy pickles"


def _an_array(facts: Facts, args: tuple[Any, ...]) -> Array:
    return Array()


def _scalar(facts: Facts, args: tuple[Any, ...]) -> str | None:
    if len(args) != 2 or facts.created(args[0]) != "numpy.dtype":
        return "takes a dtype made in this load and bytes"
    return scalar_error(args[1], facts.described(args[0]))


def _frombuffer(facts: Facts, args: tuple[Any, ...]) -> str | None:
    # Protocol 5 pickles an array as (buffer, dtype, shape, order[, axis_order]), the buffer
    # in-band as bytearray (bytes if read-only).
    if len(args) not in (4, 5) or facts.created(args[1]) != "numpy.dtype":
        return "takes bytes, a dtype made in this load, a shape and an order"
    buffer, dtype, shape, order, *axes = args
    why = buffer_error(buffer, facts.described(dtype), shape)
    if why is not None:
        return why
    axis_order: Any = axes[0] if axes else None
    if order in ("C", "F") and axis_order is None:
        return None
    permutation = type(axis_order) in (tuple, list) and len(axis_order) == len(shape)
    if order == "K" and permutation and sorted(axis_order) == list(range(len(shape))):
        return None
    return "its order must be 'C' or 'F', or 'K' with an axis order that permutes its axes"


def _an_array_built(facts: Facts, args: tuple[Any, ...]) -> Array:
    return Array(built=True)


def _stream(facts: Facts, args: tuple[Any, ...]) -> str | None:
    if len(args) == 1 and type(args[0]) in (bytes, memoryview):
        return None
    return "a tensor stream must be bytes written in the file, not built by a call"


def _dtype(facts: Facts, args: tuple[Any, ...]) -> str | None:
    # copy=True: a new dtype, so BUILD cannot change numpy's shared ones.
    # Old numpy wrote the flags as ints: ('f8', 0, 1).
    if len(args) != 3 or args[1] not in (False, True) or args[2] != 1:
        return "takes (name, align, copy=True) as numpy pickles it"
    if type(args[1]) not in (bool, int) or type(args[2]) not in (bool, int):
        return "takes (name, align, copy=True) as numpy pickles it"
    if dtype_named(args[0]) is None:
        return (
            "its name must be one numpy pickles for a net's dtypes: b1, i/u 1-8, f2-f16, "
            "c8-c32, S<n>, U<n>, V<n>, O8, M8, m8"
        )
    return None


def _a_dtype(facts: Facts, args: tuple[Any, ...]) -> DType | None:
    return dtype_named(args[0])


_FACTORIES = {"builtins.dict", "builtins.list", "builtins.set", "builtins.int", "builtins.float"}
_FACTORIES |= {"collections.OrderedDict"}


def _defaultdict(facts: Facts, args: tuple[Any, ...]) -> str | None:
    if not args or args == (None,):
        return None
    entry = facts.named(args[0])
    if len(args) == 1 and entry is not None and entry.name in _FACTORIES:
        return None
    return f"its default factory is called later: one of {sorted(_FACTORIES)}"


def _storable(entry: Entry | None) -> bool:
    """What a partial may hold and call later: a class or a constant, never a loader function."""
    return entry is not None and entry.kind in ("class", "constant")


def _wrappable(facts: Facts, func: Any) -> bool:
    """A class or a constant, or a bound method made in this load (skorch's Freezer keeps
    ``partial(self._epoch_at, epoch=1)``)."""
    return _storable(facts.named(func)) or facts.created(func) == BOUND


def _partial(facts: Facts, args: tuple[Any, ...]) -> str | None:
    if len(args) == 1 and _wrappable(facts, args[0]):
        return None
    return "wraps a class or a constant the policy names, or a method bound in this load"


def _partial_state(facts: Facts, state: tuple[Any, ...]) -> str | None:
    if type(state) is not tuple or len(state) != 4:
        return "takes (func, args, kwds, dict)"
    func, args, kwds, attributes = state
    if not _wrappable(facts, func):
        return "wraps a class or a constant the policy names, or a method bound in this load"
    if type(args) is not tuple or type(kwds) not in (dict, type(None)):
        return "takes a tuple of arguments and a dict of keywords"
    if attributes is not None and not _attribute_dict(attributes):
        return "bad attribute dict"
    # It is called with them later: a class (skorch's module=partial(MLPModule, output_nonlin=
    # Softmax()), in real files) with what this load made; a function with plain data only.
    if getattr(facts.named(func), "kind", "") == "class":
        ok = all(_made_here(facts, value) for value in (*args, *(kwds or {}).values()))
    else:
        ok = _plain(facts, args) and _plain(facts, kwds)
    return None if ok else "its arguments and keywords must be data made in this load"


def _made_here(facts: Facts, value: Any) -> bool:
    """Plain data, what a call of this load made, a class the policy names, or lists of them."""

    def leaf(item: Any) -> bool:
        entry = facts.named(item)
        made = facts.created(item) is not None or getattr(entry, "kind", "") == "class"
        return _literal(item) or made

    return _walk(facts, "made here", value, leaf)


def _bound_method(facts: Facts, args: tuple[Any, ...]) -> str | None:
    """``getattr(instance, name)``, as pickle spells a bound method (``ParamMapper``'s
    ``schedule``): the substitute binds a plain function the class defines, looked up in the
    class's own namespaces, so no attribute lookup of the instance runs. The method is stored,
    never called during the load."""
    if len(args) != 2 or type(args[1]) is not str or _dunder(args[1]):
        return "takes an instance made in this load and the name of a method"
    made = facts.created(args[0])
    entry = table().get(made or "")
    if made is None or entry is None or entry.kind != "class":
        return "binds only to an instance of a table class made in this load"
    cls = _lookup(made, importing=True)[1]
    if not isinstance(cls, type) or type(defined(cls, args[1])) is not types.FunctionType:
        return f"{args[1]!r} is not a method {made} defines as a plain function"
    owner = next(klass for klass in cls.__mro__ if args[1] in vars(klass))
    if f"{canonical_name(owner)}.{args[1]}" not in BOUND_METHODS:
        return f"skorch stores only these bound methods: {sorted(BOUND_METHODS)}"
    return None


# The bound methods skorch itself stores, and so real files hold: any other method of a table
# class, stored where skorch calls a callable (module=, criterion=, a callback's), would run
# with arguments the file chose at fit (History.to_file, NeuralNet.save_params: a path).
BOUND_METHODS = frozenset(
    {
        "skorch.callbacks.training.ParamMapper._default_schedule",  # Freezer's schedule
        "skorch.callbacks.training.ParamMapper._epoch_at",  # its at=partial(...)
    }
)


def defined(cls: type, name: str) -> Any:
    """What ``cls`` (or a base) defines as ``name``, from the class namespaces only."""
    return next((vars(klass)[name] for klass in cls.__mro__ if name in vars(klass)), None)


_RECONSTRUCTED = {OBJECT: (type(None), None), "builtins.list": (list, "list")}
_RECONSTRUCTED["builtins.dict"] = (dict, "dict")


def _reconstructor(facts: Facts, args: tuple[Any, ...]) -> str | None:
    # Protocols 0 and 1 create an instance of a plain class as _reconstructor(cls, object,
    # None), which is cls.__new__(cls): the unpickler does that as NEWOBJ, with its checks.
    # A list or dict subclass (skorch's History) comes as (cls, list, items): then the items
    # are added as APPENDS or SETITEMS would, through the container rules.
    if len(args) == 3:
        cls, base = facts.named(args[0]), facts.named(args[1])
        state, container = _RECONSTRUCTED.get(getattr(base, "name", ""), (None, "none"))
        made = cls is not None and cls.kind == "class" and cls.container == container
        if made and type(args[2]) is state:
            return None
    return (
        "takes (a class the policy names, builtins.object, None), or a list or dict subclass "
        "the policy names, builtins.list or builtins.dict, and a list or dict"
    )


_SPARSE_LAYOUTS = {f"torch.sparse_{name}" for name in ("coo", "csr", "csc", "bsr", "bsc")}


def _layout(facts: Facts, args: tuple[Any, ...]) -> str | None:
    if len(args) == 1 and type(args[0]) is str and args[0] in _SPARSE_LAYOUTS:
        return None
    return f"takes one of {sorted(_SPARSE_LAYOUTS)}"


def _sparse(facts: Facts, args: tuple[Any, ...]) -> str | None:
    # (layout, (indices, values, size[, is_coalesced])) or (layout, (compressed indices,
    # plain indices, values, size)). The substitute builds it with torch's invariant checks:
    # torch's own rebuild skips them and checks at the end of torch.load, which never runs here.
    if len(args) != 2 or facts.created(args[0]) != "torch.layout" or type(args[1]) is not tuple:
        return "takes a sparse layout made in this load and a tuple"
    parts = args[1]
    tensors = [part for part in parts if facts.created(part) == TENSOR]
    sizes = [part for part in parts if facts.created(part) == "torch.Size" or _ints(part)]
    flags = [part for part in parts if part is None or type(part) is bool]
    counts = (len(tensors), len(sizes), len(parts))
    if counts in ((2, 1, 3), (2, 1, 4), (3, 1, 4)) and sum(counts[:2]) + len(flags) == counts[2]:
        return None
    return "takes two or three tensors made in this load, a size and a flag"


_SCALARS = (bool, int, float, str, type(None))


def _typed_tensor(facts: Facts, args: tuple[Any, ...]) -> str | None:
    """A tensor with Python attributes (a lazy module's materialized buffers keep
    ``persistent`` and ``_is_buffer``): (rebuild, torch.Tensor, its arguments, attributes).
    The substitute calls the rebuild through its own entry (its check, here, and its hooks
    substitute) and sets scalar attributes that hide nothing ``torch.Tensor`` defines."""
    if len(args) != 4 or type(args[2]) is not tuple:
        return "takes (a rebuild, a tensor type, its arguments, attributes)"
    rebuild, new_type, inner, state = args
    entry = facts.named(rebuild)
    if (
        getattr(entry, "name", "") != REBUILD
        or getattr(facts.named(new_type), "name", "") != TENSOR
    ):
        return f"rebuilds with {REBUILD} as {TENSOR} only"
    why = entry.args(facts, inner)  # type: ignore[union-attr,misc]
    if why is not None:
        return why
    if not _attribute_dict(state) or not all(type(v) in _SCALARS for v in state.values()):
        return "its attributes must be a dict of plain names and scalars"
    import torch

    hidden = sorted(key for key in state if defined(torch.Tensor, key) is not None)
    return f"its attributes {hidden} would hide torch.Tensor's" if hidden else None


def _mareconstruct(facts: Facts, args: tuple[Any, ...]) -> str | None:
    # What numpy.ma writes, always: an empty base of 0 bytes, BUILT with the data after.
    if len(args) == 4 and args[2:] == ((0,), "b"):
        subtype, base = facts.named(args[0]), facts.named(args[1])
        if getattr(subtype, "name", "") == MASKED and getattr(base, "name", "") == "numpy.ndarray":
            return None
    return f"takes ({MASKED}, numpy.ndarray, (0,), 'b') only, as numpy.ma writes it"


def masked_error(facts: Facts, shape: tuple[int, ...], mask: Any, fill: Any) -> str | None:
    """Why a masked array's mask and fill value, after its data (an array's state, checked
    as one), are not what numpy.ma writes: the mask's bytes, one an element, and a fill value
    numpy checks against the dtype: plain data, or a numpy scalar or array made here."""
    count = math.prod(shape)
    if type(mask) is not bytes or len(mask) != count:
        return f"its mask must be exactly the {count} bytes of its shape"
    made = facts.created(fill) in ("numpy.ndarray", "numpy.generic")
    return None if made or _literal(fill) else "its fill value must be plain or numpy data"


def _created_elsewhere(facts: Facts, args: tuple[Any, ...]) -> str | None:
    return f"created only by {MASKED_BUILDER}"


def _never_called(facts: Facts, args: tuple[Any, ...]) -> str | None:
    return "created only by the function numpy pickles it with"


# numpy's legacy RandomState (scikit-learn keeps one as random_state_), as numpy pickles it:
# __randomstate_ctor(__bit_generator_ctor(MT19937) BUILT with its state and seed sequence),
# then BUILT with its own state. The setters copy the key into the generator; its position
# is an index into the key, which numpy never checks: here it must be within it.
RANDOM = "numpy.random."
MT19937, RANDOM_STATE = f"{RANDOM}_mt19937.MT19937", f"{RANDOM}mtrand.RandomState"
SEED_SEQUENCE = f"{RANDOM}bit_generator.SeedSequence"
ARRAY = "numpy.ndarray"
_KEY = 624  # MT19937's key, in words


def _instance_of(name: str, what: str) -> ArgCheck:
    def check(facts: Facts, args: tuple[Any, ...]) -> str | None:
        ok = len(args) == 1 and getattr(facts.named(args[0]), "name", "") == name
        return None if ok or facts.created(args[0]) == name else f"takes {what} only"

    return check


def _generator_state(facts: Facts, state: Any) -> bool:
    if type(state) is not dict or state.keys() != {"bit_generator", "state"}:
        return False
    inner = state["state"]
    if state["bit_generator"] != "MT19937" or type(inner) is not dict:
        return False
    key, position = inner.get("key"), inner.get("pos")
    ok_key = facts.created(key) == "numpy.ndarray" and inner.keys() == {"key", "pos"}
    return ok_key and type(position) is int and 0 <= position <= _KEY


def _bit_generator_state(facts: Facts, state: Any) -> str | None:
    pair = type(state) is tuple and len(state) == 2 and _generator_state(facts, state[0])
    if pair and (state[1] is None or facts.created(state[1]) == SEED_SEQUENCE):
        return None
    return (
        "takes ({'bit_generator': 'MT19937', 'state': {'key': an array, 'pos': 0 to 624}}, "
        "a seed sequence made in this load or None)"
    )


def _random_state_state(facts: Facts, state: Any) -> str | None:
    if type(state) is dict and state.keys() == {"bit_generator", "state", "has_gauss", "gauss"}:
        generator = {key: state[key] for key in ("bit_generator", "state")}
        if _generator_state(facts, generator) and state["has_gauss"] in (0, 1):
            return None if type(state["gauss"]) is float else "its gauss must be a float"
    return "takes the state numpy.random.RandomState.get_state(legacy=False) returns"


def _unpickle_seed_sequence(facts: Facts, args: tuple[Any, ...]) -> str | None:
    named = facts.named(args[0]) if len(args) == 3 else None
    if getattr(named, "name", "") == SEED_SEQUENCE and type(args[1]) is int and args[2] is None:
        return None
    return f"takes ({SEED_SEQUENCE}, its checksum, None) only"


SEED_POOL_MAX = 1 << 12  # words: numpy's default pool is 4; the loader allocates this many


def _seed_sequence_state(facts: Facts, state: Any) -> str | None:
    """(entropy, children spawned, pool, pool size, spawn key). The loader rebuilds it from
    the entropy and checks the pool it gets against the file's (see Guarded.set_state)."""
    if type(state) is tuple and len(state) == 5:
        entropy, spawned, pool, size, key = state
        plain = (entropy is None or type(entropy) is int or _ints(entropy)) and _ints(key)
        sizes = type(spawned) is int and spawned >= 0 and type(size) is int
        if plain and sizes and 4 <= size <= SEED_POOL_MAX and facts.created(pool) == ARRAY:
            return None
    return f"takes (entropy, children, a pool array, a pool size of 4 to {SEED_POOL_MAX}, key)"


def _fields(count: int) -> ArgCheck:
    """A namedtuple's fields: its ``__new__`` builds a tuple of them, and runs nothing."""

    def check(facts: Facts, args: tuple[Any, ...]) -> str | None:
        if len(args) == count and all(_made_here(facts, arg) for arg in args):
            return None
        return f"takes {count} fields, each data made in this load"

    return check


_RESPONSES = {"predict", "predict_proba", "decision_function", "predict_log_proba"}


def _scorer_state(facts: Facts, state: Any) -> str | None:
    """A scorer calls the method ``_response_method`` names on the net, later: vet the name."""
    method = state.get("_response_method") if type(state) is dict else None
    names = method if type(method) is tuple else (method,)
    if method is not None and not set(names) <= _RESPONSES:
        return f"_response_method must be among {sorted(_RESPONSES)}"
    func = state.get("_score_func") if type(state) is dict else None
    return None if func is None or _storable(facts.named(func)) else "_score_func not allowed"


METADATA = "sklearn.utils._metadata_requests."
METHOD_REQUEST = f"{METADATA}MethodMetadataRequest"


_OWNER = "'owner': a str or an instance made in this load"


def _owner(facts: Facts, owner: Any) -> bool:
    """Named in routing's messages: a class name (scikit-learn <= 1.7) or the estimator."""
    return type(owner) is str or facts.created(owner) is not None


def _method_request_state(facts: Facts, state: Any) -> str | None:
    """Routing reads ``_requests`` as {parameter: what to do}: plain values, no objects."""
    if type(state) is dict and state.keys() == {"_requests", "owner", "method"}:
        requests, method = state["_requests"], state["method"]
        plain = type(requests) is dict and all(
            type(k) is str and (v is None or type(v) in (bool, str)) for k, v in requests.items()
        )
        if plain and _owner(facts, state["owner"]) and type(method) is str:
            return None
    return f"takes {{'_requests': {{a name: None, a bool or an alias}}, {_OWNER}, 'method': str}}"


def _metadata_request_state(facts: Facts, state: Any) -> str | None:
    """Its methods call ``getattr(self, method)._consumes`` and friends: each attribute but
    ``owner`` must be a method's requests made in this load, not an object the file chose."""
    if _attribute_dict(state) and _owner(facts, state.get("owner")):
        methods = (value for key, value in state.items() if key != "owner")
        if all(facts.created(value) == METHOD_REQUEST for value in methods):
            return None
    return f"takes {{{_OWNER}, a method's name: a {METHOD_REQUEST} made in this load}}"


def _attribute_dict(state: Any) -> bool:
    return type(state) is dict and all(type(k) is str and not _dunder(k) for k in state)


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


# -- the tables ---------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


def _entries(kind: Kind, names: str, **how: Any) -> list[Entry]:
    return [Entry(name, kind, **how) for name in names.split()]


_HAND: list[Entry] = [
    *_entries(
        "function", REBUILD, args=_tensor, returns=TENSOR, hooks_at=5, describe=_described_tensor
    ),
    *_entries(
        "function",
        "torch._tensor._rebuild_from_type_v2",
        args=_typed_tensor,
        returns=TENSOR,
        substitute="typed",
        describe=_described_typed,
    ),
    *_entries("constant", TENSOR),  # named as the type of a tensor with attributes
    *_entries(
        "function",
        "torch._utils._rebuild_parameter",
        args=_parameter,
        returns=PARAMETER,
        hooks_at=2,
        describe=_described_tensor,
    ),
    *_entries("class", PARAMETER, args=_parameter_class, state=_never, describe=_described_tensor),
    *_entries(
        "function",
        "numpy._core.multiarray._reconstruct numpy.core.multiarray._reconstruct",
        args=_reconstruct,
        returns="numpy.ndarray",
        describe=_an_array,
    ),
    *_entries(
        "function",
        "numpy._core.numeric._frombuffer numpy.core.numeric._frombuffer",
        args=_frombuffer,
        returns="numpy.ndarray",
        describe=_an_array_built,
        substitute="frombuffer",
    ),
    *_entries(
        "function",
        "numpy._core.multiarray.scalar numpy.core.multiarray.scalar",
        args=_scalar,
        returns="numpy.generic",  # made here: a namedtuple's field may be one
    ),
    # Protocol 2 spells bytes as encode(str, 'latin1'): a substitute that does only that.
    *_entries(
        "function",
        "_codecs.encode",
        args=_shape((str,), lambda e: e in ("latin1", "latin-1")),
        substitute="latin1",
    ),
    # skorch >= 1.2 pickles each tensor as a nested torch.save stream: read by the reader.
    *_entries(
        "function",
        "torch.storage._load_from_bytes",
        args=_stream,
        substitute="stream",
        returns=STORAGE,
    ),
    *_entries("class", "builtins.set builtins.frozenset", args=_hashables),
    *_entries("class", "builtins.list", args=_sequence, container="list"),
    *_entries("class", "builtins.dict", args=_mapping, container="dict"),
    *_entries("class", "builtins.tuple", args=_sequence),
    *_entries("class", "builtins.bytearray", args=_bytearray),
    # Protocol 2 spells b"" as bytes(): the audit makes it too (a substitute).
    *_entries("class", "builtins.bytes", args=_shape(), substitute="bytes"),
    *_entries("class", "builtins.complex", args=_complex),
    *_entries("class", "builtins.slice", args=_slice),
    *_entries("class", "builtins.range", args=_range),
    *_entries("class", "collections.OrderedDict", args=_shape(), container="dict"),
    *_entries("class", "collections.Counter", args=_mapping, container="dict"),
    *_entries("class", "collections.defaultdict", args=_defaultdict, container="dict"),
    *_entries("class", "collections.deque", args=_deque, container="list"),
    *_entries("class", "numpy.dtype", args=_dtype, describe=_a_dtype, subtypes=True),
    *_entries("class", "numpy.ndarray", args=_reconstructed),
    *_entries("class", "functools.partial", args=_partial, state=_partial_state),
    *_entries("class", "torch.Size", args=_torch_size),
    *_entries("class", "torch.device", args=_device),
    *_entries("class", "torch.utils.data.dataloader.DataLoader"),
    # torch <= 1.x pickled each module's _backend as _get_thnn_function_backend(): see legacy.
    *_entries("function", "skorch_loadfix.stand_ins.no_backend", args=_shape()),
    *_entries(
        "class",
        "sklearn.metrics._scorer._Scorer sklearn.metrics._scorer._PredictScorer "
        "sklearn.metrics._scorer._ProbaScorer sklearn.metrics._scorer._ThresholdScorer",
        state=_scorer_state,
    ),
    *_entries("class", "sklearn.metrics._scorer._PassthroughScorer"),  # search objects keep it
    # Metadata routing's requests: kept by scikit-learn <= 1.5's _PassthroughScorer, and by
    # an estimator after set_fit_request() and friends.
    *_entries("class", f"{METADATA}MetadataRequest", state=_metadata_request_state),
    *_entries("class", METHOD_REQUEST, state=_method_request_state),
    # MultiheadAttention's out_proj: a Linear subclass that adds nothing.
    *_entries("class", "torch.nn.modules.linear.NonDynamicallyQuantizableLinear"),
    # A bound method, pickled as builtins.getattr(instance, name): see _bound_method.
    *_entries(
        "function", "builtins.getattr", args=_bound_method, substitute="method", returns=BOUND
    ),
    *_entries(
        "function", "copyreg._reconstructor", args=_reconstructor, substitute="reconstructor"
    ),
    *_entries("constant", OBJECT, substitute="base"),
    *_entries("function", "torch.serialization._get_layout", args=_layout, returns="torch.layout"),
    *_entries(
        "function",
        "torch._utils._rebuild_sparse_tensor",
        args=_sparse,
        returns=TENSOR,
        substitute="sparse",
    ),
    # Its BUILD goes to the array rebuild, as an array's with a mask and a fill value after.
    *_entries("function", MASKED_BUILDER, args=_mareconstruct, returns=MASKED, describe=_an_array),
    *_entries("class", MASKED, args=_created_elsewhere, state=_never),
    # SplineTransformer's splines: scipy's BSpline, with its array namespace's asarray.
    *_entries("class", "scipy.interpolate._bsplines.BSpline"),
    *_entries("constant", "scipy._lib.array_api_compat.numpy._aliases.asarray"),
    # IterativeImputer's imputation sequence: (feature, neighbour features, estimator).
    *_entries("class", "sklearn.impute._iterative._ImputerTriplet", args=_fields(3)),
    *_entries(
        "function",
        f"{RANDOM}_pickle.__bit_generator_ctor",
        args=_instance_of(MT19937, MT19937),
        returns=MT19937,
    ),
    *_entries("class", MT19937, args=_never_called, state=_bit_generator_state),
    *_entries(
        "function",
        f"{RANDOM}_pickle.__randomstate_ctor",
        args=_instance_of(MT19937, "an MT19937 made in this load"),
        returns=RANDOM_STATE,
    ),
    *_entries("class", RANDOM_STATE, args=_never_called, state=_random_state_state),
    *_entries(
        "function",
        f"{RANDOM}bit_generator.__pyx_unpickle_SeedSequence",
        args=_unpickle_seed_sequence,
        returns=SEED_SEQUENCE,
    ),
    *_entries("class", SEED_SEQUENCE, args=_never_called, state=_seed_sequence_state),
    # Named and stored by real nets; never called during a load.
    *_entries(
        "constant",
        """builtins.print skorch.utils.noop skorch.utils.to_numpy skorch.utils.to_tensor
        skorch.utils._indexing_dict skorch.utils._indexing_list_tuple_of_data
        skorch.utils._indexing_ndframe skorch.utils._indexing_none skorch.utils._indexing_other
        skorch.utils.train_loss_score skorch.utils.valid_loss_score
        skorch.setter.optimizer_setter skorch.callbacks.logging.rename_tensorboard_key
        skorch.utils.freeze_parameter skorch.utils.unfreeze_parameter""",
    ),
    # CyclicLR's scale functions, stored by the scheduler a net's LRScheduler keeps.
    *_entries(
        "constant",
        " ".join(
            f"torch.optim.lr_scheduler.CyclicLR._{name}_scale_fn"
            for name in ("triangular", "triangular2", "exp_range")
        ),
    ),
    *_entries(
        "constant",
        " ".join(
            f"torch.{t}"
            for t in _words(
                """float16 float32 float64 bfloat16 complex64 complex128
                int8 int16 int32 int64 uint8 bool"""
            )
        ),
    ),
]

# Spellings that moved: numpy 2 keeps numpy.core only as a shim whose module __getattr__
# forwards (and warns), so a vars() walk must be sent to numpy._core.
_MOVED = {
    f"numpy.core.multiarray.{name}": f"numpy._core.multiarray.{name}"
    for name in ("_reconstruct", "scalar")
}
_MOVED["numpy.core.numeric._frombuffer"] = "numpy._core.numeric._frombuffer"
# Names a removed skorch or torch wrote, mapped to their successors or stand-ins (the same
# table apply() installs for plain pickle.load); every lookup goes through ``translated``.
RENAMES = legacy.TRANSLATIONS


def translated(module: str, name: str) -> str:
    """The name to look up for ``module.name`` as written: Python 2 spellings, moves, renames."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    full = f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"
    if full in _MOVED and "numpy._core" in sys.modules:
        full = _MOVED[full]
    return RENAMES.get(full, full)


def _published() -> list[Entry]:
    found = []
    for line in Path(__file__).with_name("published.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, *flags = line.split()
            if flags == ["constant"]:
                found.append(Entry(name, "constant"))
            else:
                found.append(Entry(name, "class", container=flags[0] if flags else None))  # type: ignore[arg-type]
    return found


@functools.cache
def table() -> dict[str, Entry]:
    """Every written entry by name; a hand entry wins over a published one."""
    return {entry.name: entry for entry in [*_published(), *_HAND]}


# -- the hard blocklist: an extra check, spelt and canonical ---------------------------------

# A module blocks its submodules too.
BLOCKED_MODULES = frozenset(
    _words(
        """os posix nt posixpath ntpath genericpath sys subprocess _posixsubprocess importlib runpy
        pkgutil pydoc zipimport pickle _pickle pickletools copyreg marshal shelve dill
        cloudpickle joblib ctypes _ctypes socket _socket ssl select selectors asyncio
        multiprocessing concurrent threading _thread signal shutil tempfile glob io _io
        fileinput code codeop pty tty webbrowser urllib http ftplib smtplib poplib imaplib
        telnetlib xmlrpc cProfile profile _lsprof timeit bdb pdb trace inspect gc types operator
        _operator platform sysconfig site venv ensurepip pip setuptools distutils sqlite3
        torch.hub torch.package torch.jit torch.utils.cpp_extension torch.utils.benchmark
        torch.distributed torch._dynamo torch._inductor"""
    )
)
BLOCKED_NAMES = frozenset(
    f"builtins.{name}"
    for name in _words(
        """eval exec compile open getattr setattr delattr __import__ globals locals vars input
        breakpoint exit quit help __build_class__ type super object classmethod staticmethod
        property memoryview"""
    )
) | {"torch.load", "torch.serialization.load", "numpy.load", "numpy.lib.npyio.load"}


def blocked(full_name: str) -> bool:
    """On the hard blocklist: a blocked name, or anything in a blocked module."""
    parts = full_name.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts))}
    return full_name in BLOCKED_NAMES or not prefixes.isdisjoint(BLOCKED_MODULES)


def canonical_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"


# -- the policy of one load -------------------------------------------------------------------


class Refused(Exception):
    """A name the policy refuses; ``why`` says why."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name}: {why}")
        self.name, self.why = name, why


@dataclass(frozen=True)
class Policy:
    """What one load may resolve: the tables, plus ``allow`` and torch's safe globals.

    ``imported_components`` (``apply()`` with ``weights_only``): also an ``nn.Module``,
    ``Optimizer`` or ``LRScheduler`` subclass from a module already imported, found in
    ``sys.modules`` without importing. A net's own module classes can't be listed by
    ``apply()``'s caller, and the unpickler makes them safe to allow: such a class is only
    ever created with ``cls.__new__(cls)`` and filled with an attribute dict through its own
    ``__setstate__`` (torch's, or the user's own code); it is never called with arguments
    the file chose, and never returned as a callable.
    """

    allow: Mapping[str, Any] = field(default_factory=dict)  # name -> the object, or None
    imported_components: bool = False

    def entry(self, module: str, name: str, *, importing: bool) -> tuple[Entry, Any]:
        """The entry and object ``module.name`` names; raises ``Refused``.

        ``importing`` False (the verifier): nothing is imported, and the object is None when
        its module is not imported yet; the entry alone then decides.
        """
        full = translated(module, name)
        if not _DOTTED.fullmatch(full):  # before it reaches any message: a name is shown
            raise Refused(ascii(full), "not a dotted name of identifiers")
        stand_in = table().get(full)
        if stand_in is not None and stand_in.substitute in STAND_INS:
            return stand_in, None  # the unpickler hands out its substitute, never the object
        if blocked(full) or blocked(f"{module}.{name}"):
            raise Refused(full, "blocked: it can run code, touch files or unpickle again")
        if any(_dunder(part) for part in full.split(".")):
            raise Refused(full, "blocked: it reaches a dunder (a __main__ module, internals)")
        entry = self._written(full)
        module_name, obj = _lookup(full, importing=importing and entry is not None)
        if entry is None and obj is not None:
            entry = self._unwritten(full, obj)
        elif full in self.allow and obj is not None and not isinstance(obj, type):
            entry = Entry(full, "function", args=_any_args)  # a function allowed by its name
        if entry is None:
            raise Refused(full, "not allowed")
        if obj is None:
            if importing or full.rpartition(".")[0] in sys.modules:
                raise Refused(full, "not found in this install; install or define it first")
            return entry, None  # the audit imports nothing: the entry alone decides
        self._check_object(entry, obj)
        return entry, obj

    def imported(self, full: str) -> Any:
        """The object ``full`` names: imported only for an entry of the written tables.

        The audit imports nothing a file names, but it must see a class's methods to judge
        what its state may shadow: the table's modules are the vetted libraries themselves.
        """
        return _lookup(full, importing=full in table())[1]

    def _written(self, full: str) -> Entry | None:
        if full in self.allow:
            obj = self.allow[full]
            if isinstance(obj, type) or obj is None:
                return Entry(full, "class", args=_any_args)
            return Entry(full, "function", args=_any_args)
        return table().get(full)

    def _unwritten(self, full: str, obj: Any) -> Entry | None:
        """Entries found by object: torch's safe globals, then imported components."""
        if any(obj is safe for safe in _user_safe_globals()):
            kind: Kind = "class" if isinstance(obj, type) else "function"
            return Entry(full, kind, args=_any_args)
        if self.imported_components and _is_torch_component(obj):
            return Entry(full, "class")
        return None

    def _check_object(self, entry: Entry, obj: Any) -> None:
        if isinstance(obj, types.ModuleType):
            raise Refused(entry.name, "blocked: it is a module")
        if entry.kind == "constant" and not callable(obj):
            return  # torch.float32 and friends carry no name of their own
        canonical = canonical_name(obj)
        if blocked(canonical):
            raise Refused(entry.name, f"blocked: it is {canonical}")
        if canonical != entry.name and translated(*canonical.rsplit(".", 1)) != entry.name:
            raise Refused(entry.name, f"it resolves to {canonical}, not to the name allowed")
        if entry.kind == "class" and not isinstance(obj, type):
            raise Refused(entry.name, "listed as a class, but it is not one here")


def _any_args(facts: Facts, args: tuple[Any, ...]) -> str | None:
    return None  # the caller allowed it by name, as torch's add_safe_globals does


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _lookup(full: str, *, importing: bool) -> tuple[str, Any]:
    """The object ``full`` names, walking ``vars()``: no module ``__getattr__`` ever runs.

    Tries each split of ``full`` into module and qualname, longest module first.
    """
    parts = full.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        module = sys.modules.get(module_name)
        if module is None and importing:
            try:
                with resolving():
                    module = importlib.import_module(module_name)
            except ImportError:
                continue
        if module is None:
            continue
        obj: Any = module
        for part in parts[cut:]:
            namespace = vars(obj) if hasattr(obj, "__dict__") else {}
            obj = namespace.get(part)
            if obj is None:
                break
        if isinstance(obj, staticmethod):  # what getattr, and so pickle, hands out
            obj = obj.__func__
        if obj is not None:
            return module_name, obj
    return "", None


def policy(allow: Iterable[object] = (), *, imported_components: bool = False) -> Policy:
    """A ``Policy`` allowing ``allow``: classes, functions or ``"module.qualname"`` strings."""
    if isinstance(allow, (str, bytes)) or not isinstance(allow, Iterable):
        raise TypeError(
            f"allow must be a list of classes, functions or 'module.qualname' strings, "
            f"not {type(allow).__name__}; write allow=[{allow!r}]"
        )
    names: dict[str, Any] = {}
    for item in allow:
        if isinstance(item, str):
            name, obj = item, None
        elif callable(item) and hasattr(item, "__qualname__"):
            name, obj = canonical_name(item), item
        else:
            raise TypeError(
                f"allow: {item!r} is neither a class, a function nor a 'module.qualname' "
                "string; pass the class itself, e.g. allow=[MyModule]"
            )
        if blocked(name):
            raise ValueError(f"allow: {name} is on the hard blocklist and cannot be allowed")
        names[name] = obj
    table()  # read now: the audit hook refuses open() inside a guarded load
    return Policy(names, imported_components)


def _is_torch_component(obj: Any) -> bool:
    if not isinstance(obj, type) or obj.__module__.split(".")[0] in ("torch", "sklearn", "skorch"):
        return False  # the libraries' own classes are in the table, or not allowed
    import torch

    schedulers = vars(torch.optim.lr_scheduler)  # LRScheduler is _LRScheduler before torch 2.0
    scheduler = schedulers.get("LRScheduler") or schedulers["_LRScheduler"]
    return issubclass(obj, (torch.nn.Module, torch.optim.Optimizer, scheduler))


def _user_safe_globals() -> list[Any]:
    import torch

    getter = getattr(torch.serialization, "get_safe_globals", None)  # torch >= 2.4
    return [entry[0] if isinstance(entry, tuple) else entry for entry in (getter or list)()]
