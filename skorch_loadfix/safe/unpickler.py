"""The one restricted unpickler: each opcode that calls, builds or fills obeys the policy.

Safety follows objects, not names. A pickle calls whatever is on its stack (REDUCE, NEWOBJ,
NEWOBJ_EX, OBJ, INST) and writes into whatever is below it (BUILD, SETITEM(S), APPEND(S),
ADDITEMS). So ``Rules`` remembers, by identity, which objects ``find_class`` returned under
the policy and which ones a call of this load created, and refuses:

- a call of anything ``find_class`` did not return (a call result, something built), of a
  constant, or of a class with arguments its entry does not accept;
- a call that returns a class, function, method, module or an object the policy named: the
  way ``_identity(EpochTimer)`` would hand a real class to BUILD;
- BUILD on anything but an instance a call of this load created of a class in the table,
  with a state that is not an attribute dict of plain names (or what that class's entry
  says it takes), slotstate where not listed, or a key that would shadow a method of the
  class; the class's own ``__setstate__`` is used, never one the instance carries, and an
  optimizer's may not replace its class's ``step``;
- SETITEM(S), APPEND(S), ADDITEMS into anything but a dict-, list- or set-like container
  made in this load, through its type's own methods;
- PERSID outside torch's storage protocol inside a torch stream, and storage ids whose type,
  size or key ``described.storage_id`` refuses;
- numpy's and torch's C-backed objects given a state: each call and BUILD of one is checked
  into a description (``described``), and the object is built from that alone (``rebuild``):
  a dtype once, with numpy's own state for its description; an array with exactly its bytes.

``Rules`` holds the checks; ``Guarded`` runs them on real objects, and the verifier runs
the very same checks on symbols, so it can never be more lenient than the loader.
Pure Python (``pickle._Unpickler``): its opcodes can be taken over, and its copyreg
extension codes always go through ``find_class``. Large bytes handed to a tensor stream
are views of a ``MemoryFile``, not copies.
"""

from __future__ import annotations

import collections
import copyreg
import functools
import io
import pickle
import struct
import sys
import types
from collections.abc import Callable
from typing import IO, Any, ClassVar, Protocol

from ..errors import UntrustedPickleError
from ..formats import BLOB
from ..legacy import OLD_BLOB, PREFIXES, upgrade_optimizer_state
from . import rebuild
from .described import STORAGE_TYPES, Array, DType, Storage, storage_id
from .joblib_format import (
    WRAPPER,
    WRAPPER_ENTRY,
    ArrayWrapper,
    Description,
    describe,
    padding,
    read_array,
)
from .memoryfile import MemoryFile
from .policy import (
    BOUND,
    MASKED,
    MAX_DEPTH,
    MT19937,
    PARAMETER,
    RANDOM_STATE,
    SEED_SEQUENCE,
    STORAGE,
    TENSOR,
    Entry,
    Policy,
    Refused,
    defined,
    masked_error,
    table,
)
from .snapshot import snapshot

OUTER, BLOB_LEVEL, TENSORS = "outer pickle", "cuda-attributes blob", "tensor streams"
BLOB_KEYS = (BLOB, OLD_BLOB)  # skorch 0.5 kept the blob under the old key
# Dunder keys skorch itself wrote into a net's state, which restore() consumes: the blob,
# and the list a 2022 development version kept beside it (legacy translates it).
SKORCH_KEYS = (*BLOB_KEYS, PREFIXES)
MERGED = "a net's attributes once its blob is merged"
KWARGS_NOT_DICT = "skorch 0.11's _kwargs must be a dict (legacy reads its items)"
_OPTIMIZER_STATE = {"defaults": "dict", "state": "dict", "param_groups": "list"}
_CALLABLES = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


def _sized(size_format: str, handler: Callable[[Any, int], None]) -> Callable[[Any], None]:
    """An opcode whose argument is a size or code in ``size_format``, passed to ``handler``."""
    width = struct.calcsize(size_format)

    def load(unpickler: Any) -> None:
        handler(unpickler, struct.unpack(size_format, unpickler.read(width))[0])

    return load


def _opcode(name: str) -> int:
    return getattr(pickle, name)[0]  # type: ignore[no-any-return]


class InPlace(pickle._Unpickler):
    """The pure-Python unpickler, reading a tensor stream's bytes as a view of a ``MemoryFile``.

    What every read of a large blob builds on, restricted or not: the C unpickler copies
    each nested tensor stream out of the blob before torch copies it again into the tensor.
    Its copyreg extension codes go through ``find_class`` every time, never the cache.
    """

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)
    stack: list[Any]
    append: Callable[[Any], None]
    tensor_stream: Any = None  # what a tensor stream's bytes are handed to, if known yet

    def __init__(self, file: IO[bytes] | MemoryFile, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = file
        # A MemoryFile, or an Inflating stream: both hand out views (see _bytes).
        self._memory: Any = file if callable(getattr(file, "view", None)) else None

    # Large bytes given to a tensor stream, or a net's blob: a view of the file, not a copy.
    def _bytes(self, size: int) -> None:
        frame = self._unframer.current_frame  # type: ignore[attr-defined]
        in_frame = frame is not None and frame.tell() < len(frame.getbuffer())
        if self._memory is None or in_frame or not self.stack or not self._holds_tensors():
            self.append(self.read(size))  # type: ignore[attr-defined]
        else:  # large bytes are written outside any frame
            self._unframer.current_frame = None  # type: ignore[attr-defined]
            self.append(self._memory.view(size))

    def _holds_tensors(self) -> bool:
        # torch.storage._load_from_bytes(b) pickles as: the function, then b, TUPLE1, REDUCE;
        # a net's state as {..., BLOB: b, ...}. (A view under that key anywhere else is
        # still the same bytes, read-only.)
        top = self.stack[-1]
        tensor_stream = self.tensor_stream is not None and top is self.tensor_stream
        return tensor_stream or (type(top) is str and top == BLOB)

    def _extension(self, code: int) -> None:
        key = copyreg._inverted_registry.get(code)  # type: ignore[attr-defined]
        if key is None:
            raise pickle.UnpicklingError(f"unregistered extension code {code}")
        self.append(self.find_class(*key))

    for opcode, size_format, handler in [
        (pickle.SHORT_BINBYTES, "<B", _bytes),
        (pickle.BINBYTES, "<I", _bytes),
        (pickle.BINBYTES8, "<Q", _bytes),
        (pickle.EXT1, "<B", _extension),
        (pickle.EXT2, "<H", _extension),
        (pickle.EXT4, "<i", _extension),
    ]:
        dispatch[opcode[0]] = _sized(size_format, handler)
    del opcode, size_format, handler


class Rules(InPlace):
    """The checks every restricted read applies, opcode by opcode; see the module docstring."""

    dispatch = dict(InPlace.dispatch)

    def __init__(
        self,
        file: IO[bytes] | MemoryFile,
        policy: Policy,
        where: str,
        level: str,
        *,
        torch_stream: bool = False,
        room: int | None = None,
        records: dict[str, int] | None = None,
        arrays_follow: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(file, **kwargs)
        self.policy, self.where, self.level = policy, where, level
        self.torch_stream = torch_stream  # inside torch.load: storages come by PERSID
        self._room = room if room is not None or not file.seekable() else _size(file)
        self._file = file
        self.records = records  # a zip's storage record sizes by key (``storage_id``)
        self.arrays_follow = arrays_follow  # a whole file: joblib's arrays follow wrappers
        self._named: dict[int, Entry] = {}  # id -> entry, for what find_class returned
        self._created: dict[int, Entry] = {}  # id -> class entry, for what a call created
        self._described: dict[int, Any] = {}  # id -> description, for C-backed objects made
        self._keep: list[Any] = []  # keeps all three alive, so that no id is reused
        self.verdicts: dict[tuple[str, int], tuple[Any, int]] = {}  # policy._walk's
        self._depths: dict[int, tuple[Any, int, int]] = {}  # tuples, frozensets: height, size
        self.storage_keys: set[Any] = set()  # the key of each storage id read
        self._storages: dict[str, Storage] = {}  # key -> the storage torch files under it

    @property
    def room(self) -> int:
        """The bytes this level holds: what it may allocate at most. A decompressing stream's
        size is known only as it yields, so there it is what it has yielded so far."""
        return self._room if self._room is not None else int(self._file.tell())

    # -- what the two runs do differently --------------------------------------------------

    def resolve(self, entry: Entry, obj: Any) -> Any:
        """What find_class hands out for an allowed ``entry`` (a substitute, or ``obj``)."""
        raise NotImplementedError

    def invoke(self, entry: Entry, func: Any, args: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def construct(self, entry: Entry, cls: Any, args: tuple[Any, ...]) -> Any:
        """``cls.__new__(cls, *args)``, as NEWOBJ does."""
        raise NotImplementedError

    def set_state(self, entry: Entry, inst: Any, state: Any, slotstate: Any) -> None:
        raise NotImplementedError

    def fill(self, target: Any, method: str, items: list[Any]) -> None:
        raise NotImplementedError

    def storage(self, pid: tuple[Any, ...]) -> Any:
        """What torch's persistent_load returns for a ``('storage', ...)`` ``pid``."""
        raise NotImplementedError

    def returned(self, entry: Entry, func: Any, result: Any) -> str | None:
        """Why ``result`` of calling ``entry`` (``func``) may not stay on the stack, or None."""
        return None

    def tuple_items(self, entry: Entry, result: Any) -> Any:
        """The items of ``result`` if it is a tuple or frozenset (hashed item by item)."""
        return result if isinstance(result, (tuple, frozenset)) else None

    def rebuild(self, inst: Any, built: DType | tuple[Any, ...]) -> None:
        """Give ``inst`` the state its checked description ``built`` says, and nothing else:
        a dtype's, or an array's (shape, fortran, dtype, data)."""
        raise NotImplementedError

    def storage_kind(self, obj: Any) -> str | None:
        """The name of the storage type ``obj`` is, if torch's ``StorageType`` made it."""
        raise NotImplementedError

    def storage_made(self, result: Any, storage: Storage) -> str | None:
        """Why the storage torch returned is not the one ``storage`` describes, or None."""
        return None

    def streamed(self, result: Any) -> Storage | None:
        """The description of the storage a tensor stream returned (``returned`` checked it)."""

    def joblib_array(self, description: Description) -> Any:
        """The array after a joblib wrapper (the audit: its bytes skipped), padding read."""
        raise NotImplementedError

    def nested(self) -> Rules:
        """An unpickler for a pickle nested in this one's file, at this level, by these rules."""
        raise NotImplementedError
        raise NotImplementedError

    # -- the checks ---------------------------------------------------------------------------

    def refuse(self, opcode: str, obj: Any, why: str) -> None:
        raise UntrustedPickleError(
            self.where, {f"{opcode} on {self.describe(obj)}": f"{why} (in the {self.level})"}
        )

    def describe(self, obj: Any) -> str:
        entry = self._named.get(id(obj)) or self._created.get(id(obj))
        if entry is not None:
            made = "" if id(obj) in self._named else "an instance of "
            return made + entry.name
        return f"a {type(obj).__module__}.{type(obj).__qualname__}"

    def find_class(self, module: str, name: str) -> Any:
        try:
            if self.arrays_follow and f"{module}.{name}" == WRAPPER:
                entry, obj = WRAPPER_ENTRY, ArrayWrapper  # never joblib's class: see BUILD
            else:
                entry, obj = self.policy.entry(module, name, importing=self.importing)
        except Refused as refused:
            return self.refused_global(refused)
        obj = self.resolve(entry, obj)
        self._named[id(obj)] = entry
        self._keep.append(obj)
        return obj

    importing = True

    def refused_global(self, refused: Refused) -> Any:
        raise UntrustedPickleError(
            self.where, {refused.name: f"{refused.why} (in the {self.level})"}
        )

    # Facts, for the argument checks.
    def created(self, obj: Any) -> str | None:
        entry = self._created.get(id(obj))
        return None if entry is None else entry.name

    def named(self, obj: Any) -> Entry | None:
        return self._named.get(id(obj))

    def described(self, obj: Any) -> Any:
        return self._described.get(id(obj))

    def empty(self, obj: Any) -> bool:
        made = self.created(obj) in ("collections.OrderedDict", "builtins.dict")
        return (made or type(obj) is dict) and not self.items_of(obj)

    def items_of(self, obj: Any) -> Any:
        return obj

    def _call(self, opcode: str, func: Any, args: Any) -> Any:
        entry = self._named.get(id(func))
        if entry is None:
            self.refuse(opcode, func, "only what find_class returned under the policy is called")
        assert entry is not None
        if type(args) is not tuple:
            self.refuse(opcode, func, "its arguments are not a tuple")
        args = snapshot(args)  # what is checked is what is called: the memo keeps the original
        if entry.kind == "constant":
            self.refuse(opcode, func, "a constant may be named and stored, never called")
        if entry.args is None:  # a class created without __init__, as NEWOBJ does
            if entry.kind == "function" or args:
                self.refuse(opcode, func, "it is never called with arguments while loading")
            result = self.construct(entry, func, ())
        else:
            why = entry.args(self, args)
            if why is not None:
                self.refuse(opcode, func, why)
            if entry.substitute == "stream" and self.level == TENSORS:
                self.refuse(opcode, func, "torch writes no tensor stream inside another")
            if entry.substitute == "reconstructor":
                return self._reconstruct(opcode, args)
            if entry.kind == "class" and opcode == "NEWOBJ":
                result = self.construct(entry, func, args)
            else:
                result = self.invoke(entry, func, args)
        return self._record(opcode, entry, func, result, args)

    def _reconstruct(self, opcode: str, args: tuple[Any, ...]) -> Any:
        """``copyreg._reconstructor(cls, base, state)``, which protocols 0 and 1 write to
        create an instance: ``cls.__new__(cls)``, checked as NEWOBJ; a list or dict subclass
        then gets the items of ``state`` (a copy: the memo can't change them later) as
        APPENDS or SETITEMS add them."""
        cls, _, state = args
        made = self.create(opcode, cls, (), {})
        if type(state) is list:
            self.fill(made, "extend", list(state))
        elif type(state) is dict:
            self.fill(made, "__setitem__", [part for item in state.items() for part in item])
        return made

    def _record(
        self, opcode: str, entry: Entry, func: Any, result: Any, args: tuple[Any, ...]
    ) -> Any:
        method = entry.substitute == "method"  # a bound method, stored, never called: see policy
        if (isinstance(result, _CALLABLES) and not method) or id(result) in self._named:
            self.refuse(opcode, result, f"a call of {entry.name} returned a callable")
        items = self.tuple_items(entry, result)  # a namedtuple's fields too
        if items is not None:
            self._depths[id(result)] = (result, *self._size(opcode, items))
        why = self.returned(entry, func, result)
        if why is not None:
            self.refuse(opcode, result, why)
        made = entry if entry.kind == "class" else None
        if entry.returns is not None:
            made = table().get(entry.returns) or Entry(entry.returns, "function")
        if made is not None:
            self._created[id(result)] = made
            self._keep.append(result)
        if entry.describe is not None:
            self._described[id(result)] = entry.describe(self, args)
        elif entry.substitute == "stream":
            self._described[id(result)] = self.streamed(result)
        return result

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call("REDUCE", self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self.create("NEWOBJ", self.stack[-1], args, {})

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self.stack[-1] = self.create("NEWOBJ_EX", self.stack[-1], args, kwargs)

    def create(self, opcode: str, cls: Any, args: Any, kwargs: Any) -> Any:
        """``cls.__new__(cls, *args)``, as NEWOBJ and NEWOBJ_EX do, for a class only."""
        if kwargs:
            self.refuse(opcode, cls, "keyword arguments to __new__ are not allowed")
        if self._named.get(id(cls), Entry("", "function")).kind != "class":
            self.refuse(opcode, cls, "only a class the policy names is created")
        return self._call("NEWOBJ", cls, args)

    def _instantiate(self, klass: Any, args: list[Any]) -> None:  # INST and OBJ
        self.append(self._call("INST/OBJ", klass, tuple(args)))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(self.described(inst)) in (DType, Array):
            self._rebuild(inst, state)
        else:
            self.build(inst, state)

    def _rebuild(self, inst: Any, state: Any) -> None:
        """BUILD on a numpy dtype or array: checked into a description, built once from it.

        numpy's ``__setstate__`` takes flags, item size, shape and data as given, and what
        already uses the object reads them as they are now: so the object gets only the state
        numpy computes for the description, and a dtype is used only once built.
        """
        described = self.described(inst)
        built: DType | tuple[Any, ...] | str
        if type(described) is DType:
            built = described.build(state)
            if type(built) is DType:
                self._described[id(inst)] = built
        else:
            masked = self._created[id(inst)].name == MASKED
            if masked and (type(state) is not tuple or len(state) != 7):
                self.refuse(
                    "BUILD", inst, "takes (version, shape, dtype, fortran, data, mask, fill)"
                )
            state, extra = (state[:5], state[5:]) if masked else (state, ())
            dtype = state[2] if type(state) is tuple and len(state) == 5 else None
            found = described.build(state, self.described(dtype))
            if type(found) is not str and masked:
                found = masked_error(self, found[0], *extra) or found
            built = found if type(found) is str else (*found, dtype, state[4], *extra)
            if type(found) is not str:
                self._described[id(inst)] = Array(built=True)
        if type(built) is str:
            self.refuse("BUILD", inst, built)
        self.rebuild(inst, built)  # type: ignore[arg-type]

    def build(self, inst: Any, state: Any) -> None:
        """Checks ``state`` and sets it: a copy of its plain containers, so that what is
        checked is what the instance keeps (``functools.partial`` keeps its ``kwds`` and
        dict as given), and no later SETITEM through the memo can change it."""
        entry = self._created.get(id(inst))
        if entry is None or entry.kind != "class":
            self.refuse("BUILD", inst, "only an instance a call of this load created is built")
        assert entry is not None
        if entry is WRAPPER_ENTRY:
            self.stack[-1] = self._joblib_array(inst, state)
            return
        state = snapshot(state)
        slotstate = None
        if entry.state is not None:
            why = entry.state(self, state)
        else:
            if type(state) is tuple and len(state) == 2:
                state, slotstate = state
                if slotstate is not None and not entry.slotstate:
                    self.refuse("BUILD", inst, "slotstate sets attributes through setattr")
            why = (
                None
                if state is None or self.attribute_dict(state)
                else ("the state must be a dict of attribute names, none of them a dunder")
            )
        if why is None:
            why = self._shadowing(entry, inst, state) or self._optimizer_state(entry, inst, state)
            why = why or self._rnn_state(entry, inst, state)
        if why is not None:
            self.refuse("BUILD", inst, why)
        self.set_state(entry, inst, state, slotstate)

    def _joblib_array(self, wrapper: Any, state: Any) -> Any:
        """What joblib's reader puts in a wrapper's place: see ``safe.joblib_format``."""
        dtype = state.get("dtype") if type(state) is dict else None
        description = describe(self, state, self.described(dtype))
        if isinstance(description, str):
            self.refuse("BUILD", wrapper, description)
        assert isinstance(description, Description)
        frame = self._unframer.current_frame  # type: ignore[attr-defined]
        if frame is not None and frame.tell() < len(frame.getbuffer()):
            self.refuse("BUILD", wrapper, "joblib writes an array after its wrapper's frame")
        self._unframer.current_frame = None  # type: ignore[attr-defined]
        del self._created[id(wrapper)]  # built once: the memo's copy is a husk from now on
        if not description.objects:
            padding(self.source, description)
            return self.joblib_array(description)
        nested = self.nested()  # joblib pickles an object array after its wrapper
        found = nested.load()
        if nested.created(found) != "numpy.ndarray":
            self.refuse("BUILD", wrapper, "the pickle after an object array's wrapper is no array")
        return found

    def instance_type(self, entry: Entry, inst: Any) -> type | None:
        """The class ``inst`` is an instance of, if known (the audit imports nothing)."""
        return type(inst)

    def _shadowing(self, entry: Entry, inst: Any, state: Any) -> str | None:
        """Why a state key may not be set: it would shadow a method of the class.

        An instance attribute hides a function, staticmethod or classmethod of its class, so
        whatever code runs on the instance later (its own ``__setstate__`` during this very
        load: ``Optimizer.__setstate__`` calls ``self._patch_step_function()``) would call
        the file's object instead. Plain data class attributes may be shadowed, and a data
        descriptor (a property) is never hidden.
        """
        cls = self.instance_type(entry, inst)
        attributes = state[3] if entry.name == "functools.partial" else state
        if cls is None or type(attributes) is not dict:
            return None
        return shadowing(cls, attributes)

    def _optimizer_state(self, entry: Entry, inst: Any, state: Any) -> str | None:
        """An optimizer's ``__setstate__`` calls methods of its state's values.

        ``self.defaults.setdefault(...)``, ``group.setdefault(...)`` for each of
        ``self.param_groups``, ``self.state.get(...)``: each must be a container made in this
        load, whose methods are its type's own (the key rule keeps them so), not an object
        whose attribute of that name the file chose.
        """
        cls = self.instance_type(entry, inst)
        optim = sys.modules.get("torch.optim")
        if cls is None or optim is None or type(state) is not dict:
            return None
        if not issubclass(cls, optim.Optimizer):
            return None
        for key, kind in _OPTIMIZER_STATE.items():
            if key in state and self._container(state[key]) != kind:
                return f"an optimizer's {key} must be a {kind} made in this load"
        groups = self.items_of(state.get("param_groups", []))
        if any(self._container(group) != "dict" for group in groups):
            return "an optimizer's param_groups must hold dicts made in this load"
        # __setstate__ loops over each group's params: shared through the memo, a small
        # file would cost groups x params.
        params = [group.get("params") for group in groups if type(group) is dict]
        lists = [id(group) for group in groups] + [id(p) for p in params if p is not None]
        if len(set(lists)) != len(lists):
            return "an optimizer's param groups and their params lists must be distinct"
        return None

    def _rnn_state(self, entry: Entry, inst: Any, state: Any) -> str | None:
        """``RNNBase.__setstate__`` rebuilds the weight names from ``num_layers`` when they are
        not names (torch < 1.8's form): a loop whose length the file chooses."""
        cls = self.instance_type(entry, inst)
        nn = sys.modules.get("torch.nn")
        if cls is None or nn is None or type(state) is not dict or not issubclass(cls, nn.RNNBase):
            return None
        layers = state.get("_all_weights")
        names = self._container(layers) == "list" and all(
            self._container(layer) == "list" and all(type(n) is str for n in self.items_of(layer))
            for layer in self.items_of(layers)
        )
        return None if names else "an RNN's _all_weights must be lists of its weights' names"

    def attribute_dict(self, state: Any) -> bool:
        return type(state) is dict and all(
            type(k) is str and (k in SKORCH_KEYS or not _dunder(k)) for k in state
        )

    def _container(self, target: Any) -> str | None:
        literals: dict[type, str] = {dict: "dict", list: "list", set: "set"}
        literal = literals.get(type(target))
        if literal is not None and id(target) not in self._named:
            return literal
        entry = self._created.get(id(target))
        return None if entry is None else entry.container

    def _fill(self, opcode: str, kind: str, method: str, items: list[Any]) -> None:
        self.verdicts.clear()  # a container changes: what was checked of it may no longer hold
        target = self.stack[-1]
        if self._container(target) != kind:
            self.refuse(opcode, target, f"only a {kind} made in this load is filled")
        self.fill(target, method, items)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._fill("SETITEM", "dict", "__setitem__", [key, value])

    def load_setitems(self) -> None:
        self._fill("SETITEMS", "dict", "__setitem__", self.pop_mark())  # type: ignore[attr-defined]

    def load_append(self) -> None:
        self._fill("APPEND", "list", "extend", [self.stack.pop()])

    def load_appends(self) -> None:
        self._fill("APPENDS", "list", "extend", self.pop_mark())  # type: ignore[attr-defined]

    def load_additems(self) -> None:
        self._fill("ADDITEMS", "set", "update", self.pop_mark())  # type: ignore[attr-defined]

    def load_binpersid(self) -> None:
        pid = self.stack.pop()
        if not self.torch_stream:
            self.refuse("BINPERSID", pid, "a persistent id outside a torch stream")
        kind = pid[0] if type(pid) is tuple and pid else None
        if kind == "module":  # torch < 1.6 saved a module's class so: (module, cls, file, source)
            entry = self._named.get(id(pid[1])) if len(pid) == 4 else None
            if entry is None or entry.kind != "class":
                self.refuse("BINPERSID", pid, "a module id must name a class the policy allows")
            # torch returns the class, after comparing its source with the one saved, only to
            # warn: inspect.getsource reads and compiles a source file, which the hook refuses.
            self.append(pid[1])
            return
        if kind != "storage" or len(pid) < 3 or type(pid[2]) is not str:
            self.refuse("BINPERSID", pid, "only torch's ('storage', type, key, ...) ids are read")
        found = storage_id(pid, self.storage_kind(pid[1]), self.room, self.records)
        if isinstance(found, str):
            self.refuse("BINPERSID", pid, found)
            return
        storage, key = found
        for name, described in ((pid[2], Storage(storage.kind, pid[4])), (key, storage)):
            if self._storages.setdefault(name, described) != described:  # torch reuses it
                self.refuse("BINPERSID", pid, "its key names a storage of another type or size")
        self.storage_keys.add(pid[2])
        result = self.storage(pid)
        why = self.storage_made(result, storage)
        if why is not None:
            self.refuse("BINPERSID", result, why)
        self._created[id(result)] = Entry(STORAGE, "function")
        self._described[id(result)] = storage
        self._keep.append(result)
        self.append(result)

    def roots(self) -> dict[str, Storage]:
        """Each storage id's root key read, and the storage torch files under it."""
        return {key: self._storages[key] for key in self.storage_keys}

    def load_persid(self) -> None:
        self.refuse("PERSID", None, "torch writes BINPERSID only")

    # Tuples and frozensets are hashed (as dict keys, set items) by CPython recursively in C,
    # with no guard, and through every item, shared ones again each time: each records its
    # height and its unfolded size as it is made (its items are final), and none is higher
    # than MAX_DEPTH or larger than the bytes read.
    def _size(self, opcode: str, items: Any) -> tuple[int, int]:
        known = [self._depths[id(item)] for item in items if id(item) in self._depths]
        height = 1 + max((below for _, below, _ in known), default=0)
        size = 1 + len(items) + sum(inner for _, _, inner in known)
        if height > MAX_DEPTH:
            self.refuse(opcode, None, f"tuples and frozensets nest at most {MAX_DEPTH} deep")
        if size > max(self.room, 1 << 16):
            why = "a tuple or frozenset unfolds to more items than the file holds bytes"
            self.refuse(opcode, None, why)
        return height, size

    def _immutable(self, opcode: str, kind: type, items: list[Any]) -> None:
        size = self._size(opcode, items)  # before frozenset hashes its items
        made = kind(items)
        self._depths[id(made)] = (made, *size)
        self.append(made)

    def load_tuple(self) -> None:
        self._immutable("TUPLE", tuple, self.pop_mark())  # type: ignore[attr-defined]

    def _load_tuple_of(self, count: int) -> None:
        items = self.stack[-count:]
        del self.stack[-count:]
        self._immutable(f"TUPLE{count}", tuple, items)

    def load_frozenset(self) -> None:
        self._immutable("FROZENSET", frozenset, self.pop_mark())  # type: ignore[attr-defined]

    for _name, _method in [
        ("REDUCE", load_reduce),
        ("NEWOBJ", load_newobj),
        ("NEWOBJ_EX", load_newobj_ex),
        ("BUILD", load_build),
        ("SETITEM", load_setitem),
        ("SETITEMS", load_setitems),
        ("APPEND", load_append),
        ("APPENDS", load_appends),
        ("ADDITEMS", load_additems),
        ("BINPERSID", load_binpersid),
        ("PERSID", load_persid),
        ("TUPLE", load_tuple),
        ("TUPLE1", lambda self: self._load_tuple_of(1)),
        ("TUPLE2", lambda self: self._load_tuple_of(2)),
        ("TUPLE3", lambda self: self._load_tuple_of(3)),
        ("FROZENSET", load_frozenset),
    ]:
        dispatch[_opcode(_name)] = _method
    del _name, _method


class Net(Protocol):
    """What the guarded unpickler asks of its reader."""

    def stream(self, data: bytes | memoryview) -> Any: ...

    def restore_net(self, net: Any, state: dict[str, Any]) -> None: ...


def _size(file: Any) -> int:
    """The bytes ``file`` holds: what the level being read may allocate at most."""
    where = file.tell()
    try:
        return int(file.seek(0, io.SEEK_END))
    finally:
        file.seek(where)


def _latin1(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for bytes, and nothing else."""
    return text.encode("latin1")


def _bind(instance: Any, name: str) -> types.MethodType:
    """``builtins.getattr`` for a bound method: the class's plain function, bound, without
    any attribute lookup on the instance (its ``__getattr__`` or descriptors never run)."""
    return types.MethodType(defined(type(instance), name), instance)


class Sealed:
    """What a load holds for a function of the table (a rebuild, a constructor): the
    unpickler calls it at once, with the arguments its entry checked. Stored anywhere (a
    net's ``module``, which ``fit`` calls with arguments the file chose), it is this, and
    calling it later raises."""

    def __init__(self, name: str, function: Any) -> None:
        self.name, self.function = name, function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self.name} was stored by a file read with skorch_loadfix.load(): it is called "
            "only while loading, with the arguments the policy checked, never later"
        )

    def __repr__(self) -> str:
        return f"<sealed {self.name}>"


class StandIn:
    """What a load gets for a name the blocklist keeps and a rule does instead: protocols 0
    and 1 spell ``cls.__new__(cls)`` as ``copyreg._reconstructor(cls, builtins.object, None)``,
    which ``Rules`` does as NEWOBJ. Kept anywhere else, either is this inert marker, never
    the real object (``object.__new__`` and ``copyreg`` reach everything)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<stand-in for {self.name}>"


_MARKERS = {"reconstructor": StandIn("copyreg._reconstructor"), "base": StandIn("builtins.object")}


def _sparse_tensor(layout: Any, data: tuple[Any, ...]) -> Any:
    """``torch._utils._rebuild_sparse_tensor`` with torch's invariant checks on: torch's skips
    them, to check at the end of ``torch.load``, which never runs here. Out-of-range indices
    would read and write outside the values."""
    import torch

    # torch keeps the tensors it is given: copies, so that no other tensor of the file sharing
    # their storage (a buffer training updates) can change the indices once checked.
    if layout == torch.sparse_coo:
        indices, values, size, *coalesced = data
        return torch.sparse_coo_tensor(
            indices.clone(),
            values.clone(),
            size,
            check_invariants=True,
            is_coalesced=next(iter(coalesced), None),
        )
    compressed, plain, values, size = data
    return torch.sparse_compressed_tensor(
        compressed.clone(),
        plain.clone(),
        values.clone(),
        size,
        layout=layout,
        check_invariants=True,
    )


class Guarded(Rules):
    """``Rules`` on real objects: what ``load()`` and every restricted read run."""

    def __init__(
        self, file: Any, policy: Policy, where: str, level: str, net: Net, **kwargs: Any
    ) -> None:
        super().__init__(file, policy, where, level, **kwargs)
        self._net = net
        self.tensor_stream = net.stream  # one bound method: the in-place reading checks identity

    def resolve(self, entry: Entry, obj: Any) -> Any:
        substitutes = {"stream": self.tensor_stream, "latin1": _latin1, "method": _bind}
        substitutes |= {"sparse": _sparse_tensor, "frombuffer": rebuild.frombuffer, **_MARKERS}
        found = substitutes.get(entry.substitute or "", obj)
        # The table's functions, not one the caller allowed by name (stored as theirs).
        sealed = entry.kind == "function" and table().get(entry.name) is entry
        sealed = sealed and entry.substitute not in ("stream", *_MARKERS)
        return Sealed(entry.name, found) if sealed else found

    def invoke(self, entry: Entry, func: Any, args: tuple[Any, ...]) -> Any:
        if entry.substitute == "typed":  # (rebuild, torch.Tensor, its arguments, attributes)
            rebuilder, _, inner, attributes = args
            tensor = self.invoke(self._named[id(rebuilder)], rebuilder, inner)
            for key, value in attributes.items():  # scalars: nothing later can change them
                setattr(tensor, key, value)
            return tensor
        if entry.hooks_at is not None:  # the file's (empty) dict could be filled later
            args = (*args[: entry.hooks_at], collections.OrderedDict(), *args[entry.hooks_at + 1 :])
        return (func.function if type(func) is Sealed else func)(*args)

    def construct(self, entry: Entry, cls: Any, args: tuple[Any, ...]) -> Any:
        return cls.__new__(cls, *args)

    def joblib_array(self, description: Description) -> Any:
        return read_array(self.source, description)

    def nested(self) -> Rules:
        return Guarded(self.source, self.policy, self.where, self.level, self._net)

    def returned(self, entry: Entry, func: Any, result: Any) -> str | None:
        if entry.kind == "class":  # exactly that class (numpy's dtype: one of its subclasses)
            ok = type(result) is func or (entry.subtypes and isinstance(result, func))
        else:
            expected = _classes().get(entry.returns or "")
            ok = expected is None or (
                isinstance(result, expected)
                if entry.returns == STORAGE
                else type(result) is expected
            )
        return None if ok else f"a call of {entry.name} returned a {type(result).__name__}"

    def rebuild(self, inst: Any, built: DType | tuple[Any, ...]) -> None:
        if isinstance(built, DType):
            why = rebuild.dtype(inst, built)
        else:
            why = rebuild.array(inst, *built)
        if why is not None:
            self.refuse("BUILD", inst, why)

    def storage_kind(self, obj: Any) -> str | None:
        return rebuild.storage_kind(obj)

    def storage_made(self, result: Any, storage: Storage) -> str | None:
        return rebuild.storage_error(result, storage)

    def streamed(self, result: Any) -> Storage | None:
        return rebuild.described_storage(result)

    def set_state(self, entry: Entry, inst: Any, state: Any, slotstate: Any) -> None:
        net_module = sys.modules.get("skorch.net")
        if net_module is not None and isinstance(inst, net_module.NeuralNet):
            self._net.restore_net(inst, state)
            return
        optim = sys.modules.get("torch.optim")
        if optim is not None and isinstance(inst, optim.Optimizer):
            upgrade_optimizer_state(inst, state)  # what apply() patches in for pickle.load
        if entry.name == SEED_SEQUENCE:
            state = self._seed_sequence_state(inst, state)
        setstate = getattr(type(inst), "__setstate__", None)
        if setstate is not None:
            step = _optimizer_step(inst)
            setstate(inst, state)
            if step is not None:
                self._check_step(inst, step)
            return
        if state:
            inst.__dict__.update(state)
        for key, value in (slotstate or {}).items():
            setattr(inst, key, value)

    def _seed_sequence_state(self, inst: Any, state: tuple[Any, ...]) -> Any:
        """The state numpy makes for the same entropy, spawn key and sizes, if its pool is
        the file's: the C-level setter takes the pool as given, and its size from another
        field."""
        import numpy

        entropy, spawned, pool, size, key = state
        fresh = numpy.random.SeedSequence(
            entropy, spawn_key=key, pool_size=size, n_children_spawned=spawned
        )
        if not numpy.array_equal(fresh.pool, pool):
            self.refuse("BUILD", inst, "its pool is not the one its entropy gives")
        return fresh.__reduce__()[2]

    def _check_step(self, inst: Any, before: Any) -> None:
        """``Optimizer.__setstate__`` writes ``type(inst).step``: for every later instance.

        It may wrap torch's own step in torch's profiling wrapper, once; anything else (a
        file's object, reached by shadowing the method that wraps) is undone and refused.
        """
        after = type(inst).step
        if after is before or (
            getattr(after, "__wrapped__", None) is before
            and getattr(after, "__code__", None) is _profiling_wrapper()
        ):
            return
        type(inst).step = before
        self.refuse("BUILD", inst, "its __setstate__ replaced the class's step")

    def fill(self, target: Any, method: str, items: list[Any]) -> None:
        if method == "__setitem__":
            setitem = type(target).__setitem__
            for i in range(0, len(items), 2):
                setitem(target, items[i], items[i + 1])
        else:
            getattr(type(target), method)(target, items)

    def storage(self, pid: tuple[Any, ...]) -> Any:
        return self.persistent_load(pid)


def unfilled(roots: dict[str, Storage], keys: Any, level: str, file: Any) -> dict[str, str]:
    """The refusal, if an old torch stream does not fill each storage its object named
    (``roots``, by key) as its id said. torch fills only the listed ``keys`` and hands back
    the others as it allocated them, holding whatever memory they got; it reads each one's
    element count from ``file`` before its bytes, and fails the load on a count other than
    the id's, after the allocation."""
    listed = type(keys) is list and all(type(key) is str for key in keys)
    if not listed or set(keys) != set(roots) or len(set(keys)) != len(keys):
        why = f"torch would return it uninitialized (in the {level})"
        return {"a storage the stream never fills": why}
    where, end = file.tell(), _size(file)
    try:
        for key in keys:
            head = file.read(8)
            count = int.from_bytes(head, "little", signed=True)
            if len(head) < 8 or count != roots[key].numel:
                break
            file.seek(count * STORAGE_TYPES[roots[key].kind][0], io.SEEK_CUR)
        else:
            if file.tell() <= end:
                return {}
    finally:
        file.seek(where)
    why = f"the stream's data does not hold it at the size its id said (in the {level})"
    return {"a storage of another size than its id's": why}


def shadowing(cls: type, keys: Any) -> str | None:
    """Why a key may not be an attribute of a ``cls`` instance: it shadows a method of it."""
    for key in keys:
        klass = next((klass for klass in cls.__mro__ if key in vars(klass)), None)
        if klass is not None and _shadowed(vars(klass)[key]):
            return f"the state key {key!r} would shadow {klass.__qualname__}.{key}"
    return None


def merged_refusal(cls: type | None, keys_by_level: list[tuple[str, list[Any]]]) -> dict[str, str]:
    """The refusal, if a net's final attribute dict breaks the rules of BUILD.

    ``restore()`` installs the net's state after its blob is merged into it and legacy
    has upgraded it: keys that no BUILD checked (the blob's, skorch 0.11's ``_kwargs``).
    ``keys_by_level``: the keys, by the level of the file they come from. ``cls`` None: a
    class the audit cannot see without importing it, whose methods it cannot know.
    """
    for level, keys in keys_by_level:
        bad = [key for key in keys if type(key) is not str or _dunder(key)]
        why = f"the key {bad[0]!r} is not an attribute name (a str, no dunder)" if bad else None
        why = why or (None if cls is None else shadowing(cls, keys))
        if why is not None:
            return {MERGED: f"{why} (in the {level})"}
    return {}


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _shadowed(found: Any) -> bool:
    """Whether an instance attribute would hide ``found``, a callable class attribute.

    A data descriptor (a property, a slot) wins over the instance dict: it is never hidden.
    """
    descriptor = type(found)
    if hasattr(descriptor, "__set__") or hasattr(descriptor, "__delete__"):
        return False
    return callable(found) or hasattr(descriptor, "__get__")


def _optimizer_step(inst: Any) -> Any:
    """The class's ``step`` if ``inst`` is a torch optimizer (torch is imported then)."""
    optim = sys.modules.get("torch.optim")
    if optim is None or not isinstance(inst, optim.Optimizer):
        return None
    return type(inst).step


@functools.cache
def _profiling_wrapper() -> types.CodeType:
    """The code of torch's ``profile_hook_step`` wrapper (functools.wraps renames it)."""
    import torch

    return torch.optim.Optimizer.profile_hook_step(_classes).__code__


def _classes() -> dict[str, Any]:  # a class, or a tuple of them for isinstance
    """What each ``returns`` must be. numpy's submodules are taken only where imported: a
    call of theirs was resolved by importing them, and numpy's ``__getattr__`` would import
    them here, inside the guard, for any other load."""
    import numpy
    import torch

    classes = {
        TENSOR: torch.Tensor,
        PARAMETER: torch.nn.Parameter,
        STORAGE: (torch.storage.TypedStorage, torch.UntypedStorage),
        "numpy.ndarray": numpy.ndarray,
        "numpy.dtype": numpy.dtype,
        BOUND: types.MethodType,
        "torch.layout": torch.layout,
    }
    masked, random = sys.modules.get("numpy.ma"), sys.modules.get("numpy.random")
    if masked is not None:
        classes[MASKED] = masked.MaskedArray
    if random is not None:
        classes |= {
            MT19937: random.MT19937,
            RANDOM_STATE: random.RandomState,
            SEED_SEQUENCE: random.SeedSequence,
        }
    return classes
