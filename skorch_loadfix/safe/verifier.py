"""The audit: the unpickler's own rules run on symbols, so that nothing the file names runs.

``Symbolic`` is ``Rules`` with every effect replaced: ``find_class`` judges the name against the
tables and ``sys.modules`` and returns a ``Symbol`` (no import, no module ``__getattr__``);
a call returns a ``Made`` recording what it would create; BUILD records the state. Every check
is the unpickler's, so the audit is never more lenient than the load; what it cannot follow
(a refused global's results) it keeps following as ``Opaque`` only to list every refused name.

It follows every level: the outer pickle; each net's blob (a ``torch.save`` zip, the old
``torch.save`` stream with raw storages after its pickles, or a plain pickle); each tensor
stream (``torch.storage._load_from_bytes(bytes)`` wherever it sits) and the streams nested
in those. Large byte arguments are read as views of the file, not copied.
"""

from __future__ import annotations

import io
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..content import NotAPickledNet, readable
from ..errors import UntrustedPickleError
from ..formats import BLOB
from ..legacy import OLD_BLOB, PREFIXES, init_defaults
from .archive import data_pickle, refusals, storage_sizes
from .described import STORAGE_TYPES, DType, Storage
from .inflating import opened
from .joblib_format import Description, skip_array
from .memoryfile import MemoryFile
from .policy import Entry, Policy, Refused, translated
from .unpickler import (
    BLOB_KEYS,
    KWARGS_NOT_DICT,
    MERGED,
    SKORCH_KEYS,
    Rules,
    merged_refusal,
    unfilled,
)
from .unpickler import BLOB_LEVEL as BLOB_LEVEL  # the levels: inspect and readers read them here
from .unpickler import OUTER as OUTER
from .unpickler import TENSORS as TENSORS

LEVELS = (OUTER, BLOB_LEVEL, TENSORS)
NOT_BYTES = "a net's blob that is not bytes written in the file"
NOT_DICT = "a net's blob that does not load as a dict"
KEPT_VIEW = "bytes read in place, kept"
ZIP_MAGIC = b"PK\x03\x04"
STORAGE_SYMBOL = "torch.storage"  # what a persistent id makes, in the audit
TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER, without importing torch


class Symbol:
    """What an allowed global is in the audit: its entry, never the object."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry

    def __repr__(self) -> str:
        return f"<{self.entry.name}>"


class Opaque:
    """A refused global, or anything made from one: followed only to find more names."""


@dataclass(eq=False)
class Made:
    """What a call would have created."""

    entry: Entry
    args: tuple[Any, ...] = ()
    state: Any = None
    items: list[Any] = field(default_factory=list)

    def __hash__(self) -> int:
        return id(self)


@dataclass
class Findings:
    """Every global named at each level, what the policy refuses, and each net's state."""

    seen: dict[str, set[str]] = field(default_factory=lambda: {level: set() for level in LEVELS})
    refused: dict[str, str] = field(default_factory=dict)
    nets: list[Made] = field(default_factory=list)


class Symbolic(Rules):
    importing = False

    def __init__(self, file: Any, audit: Audit, level: str, **kwargs: Any) -> None:
        super().__init__(file, audit.policy, audit.where, level, **kwargs)
        self.audit = audit

    def find_class(self, module: str, name: str) -> Any:
        self.audit.findings.seen[self.level].add(translated(module, name))
        if self.torch_stream and name in STORAGE_TYPES:  # as torch's find_class: any module
            return _StorageType(name)  # torch's wrapper answers these itself, not find_class
        return super().find_class(module, name)

    def refused_global(self, refused: Refused) -> Any:
        self.audit.refuse(refused.name, f"{refused.why} (in the {self.level})")
        return Opaque()

    def resolve(self, entry: Entry, obj: Any) -> Any:
        if entry.substitute != "stream":
            return Symbol(entry)
        if self.tensor_stream is None:  # one object, as the loader's: its bytes are views
            self.tensor_stream = Symbol(entry)
        return self.tensor_stream

    def _call(self, opcode: str, func: Any, args: Any) -> Any:
        if isinstance(func, Opaque) or any(isinstance(arg, Opaque) for arg in args or ()):
            return Opaque()
        return super()._call(opcode, func, args)

    def invoke(self, entry: Entry, func: Any, args: tuple[Any, ...]) -> Any:
        if entry.substitute == "latin1":
            return args[0].encode("latin1")
        if entry.substitute == "bytes":
            return b""
        if entry.substitute == "stream":
            return self.audit.stream(args[0])
        return Made(entry, args)

    def returned(self, entry: Entry, func: Any, result: Any) -> str | None:
        # What the loader checks of a real result: a tensor stream holds one storage.
        storage = isinstance(result, Made) and result.entry.name == STORAGE_SYMBOL
        if entry.substitute != "stream" or storage or isinstance(result, Opaque):
            return None
        return f"a call of {entry.name} returned {_made(result)}"

    def construct(self, entry: Entry, cls: Any, args: tuple[Any, ...]) -> Any:
        return Made(entry, args)

    def tuple_items(self, entry: Entry, result: Any) -> Any:
        if not isinstance(result, Made):
            return super().tuple_items(entry, result)
        cls = self.instance_type(entry, result)  # a namedtuple the loader makes as a tuple
        return result.args if isinstance(cls, type) and issubclass(cls, tuple) else None

    def joblib_array(self, description: Description) -> Any:
        skip_array(self.source, description)
        return Made(Entry("numpy.ndarray", "constant"))

    def nested(self) -> Rules:
        return Symbolic(self.source, self.audit, self.level)

    def instance_type(self, entry: Entry, inst: Any) -> type | None:
        found = self.policy.imported(entry.name)
        return found if isinstance(found, type) else None

    def set_state(self, entry: Entry, inst: Any, state: Any, slotstate: Any) -> None:
        inst.state = state
        net_module = sys.modules.get("skorch.net")
        cls = self.instance_type(entry, inst)
        blob = self._follow_blob(inst, state)
        if net_module is not None and cls is not None and issubclass(cls, net_module.NeuralNet):
            self.audit.restored.add(id(inst))  # the loader's restore() pops its blob
        elif cls is not None or type(state) is not dict or BLOB not in state:
            return
        # A net of a class the audit can't see (allowed by name, not imported): by its keys.
        for name, why in restored_refusal(cls, state, blob, self.level).items():
            self.audit.refuse(name, why)

    def _follow_blob(self, inst: Any, state: Any) -> Any:
        """What the blob ``restore()`` reads loads as (the audit's reading), or None."""
        if type(state) is not dict:
            return None
        found = {}
        for key in BLOB_KEYS:
            if key not in state:
                continue
            if type(state[key]) not in (bytes, memoryview):
                if key == BLOB:  # what the loader refuses too; skorch >= 0.6 lists names
                    kind = type(state[key]).__name__  # under the old key
                    self.audit.refuse(NOT_BYTES, f"a {kind} (in the {self.level})")
                continue
            if isinstance(inst, Made):
                self.audit.findings.nets.append(inst)
            found[key] = self.audit.blob(state[key])
        return found.get(BLOB, found.get(OLD_BLOB))

    def build(self, inst: Any, state: Any) -> None:
        if isinstance(inst, Opaque):
            self._follow_blob(None, state)
        else:
            super().build(inst, state)

    def create(self, opcode: str, cls: Any, args: Any, kwargs: Any) -> Any:
        return Opaque() if isinstance(cls, Opaque) else super().create(opcode, cls, args, kwargs)

    def _fill(self, opcode: str, kind: str, method: str, items: list[Any]) -> None:
        if not isinstance(self.stack[-1], Opaque):
            super()._fill(opcode, kind, method, items)

    def fill(self, target: Any, method: str, items: list[Any]) -> None:
        if isinstance(target, Made):
            target.items.extend(items)
        elif method == "__setitem__":
            target.update(zip(items[::2], items[1::2], strict=True))
        else:
            getattr(target, method)(items)

    def items_of(self, obj: Any) -> Any:
        return obj.items if isinstance(obj, Made) else obj

    def storage(self, pid: tuple[Any, ...]) -> Any:
        return Made(Entry(STORAGE_SYMBOL, "function"), pid)

    def storage_kind(self, obj: Any) -> str | None:
        return obj.name if isinstance(obj, _StorageType) else None

    def storage_made(self, result: Any, storage: Storage) -> str | None:
        self.audit.storages[id(result)] = (result, storage)  # for the level that streamed it
        return None

    def streamed(self, result: Any) -> Storage | None:
        return self.audit.storages.get(id(result), (None, None))[1]

    def rebuild(self, inst: Any, built: DType | tuple[Any, ...]) -> None:
        inst.state = built  # what the object holds: walked for kept views


class _StorageType:
    """torch's ``StorageType``: named inside torch streams, pushed, never called or built.

    torch's ``find_class`` answers a name ``StorageType`` knows (``STORAGE_TYPES``) in any
    module, before the unpickler's: so does the audit, and it answers no other.

    Not ``Opaque``: nothing was refused, so every rule still applies to it.
    """

    def __init__(self, name: str) -> None:
        self.name = name


class Audit:
    """One static reading of a file (or a blob) under ``policy``."""

    def __init__(self, policy: Policy, where: str) -> None:
        self.policy, self.where = policy, where
        self.findings = Findings()
        self.restored: set[int] = set()  # ids of the nets whose blob the loader consumes
        self.storages: dict[int, tuple[Made, Storage]] = {}  # each storage made, described

    def refuse(self, name: str, why: str) -> None:
        self.findings.refused.setdefault(name, why)

    def file(self, data: bytes | memoryview) -> Findings:
        content = readable(data)
        if content.torch_save:
            found = self._torch(data, OUTER)
        else:
            found = self._pickle(opened(data, content.compression), OUTER, arrays_follow=True)
        self._kept_views(found, OUTER)
        return self.findings

    def blob(self, data: bytes | memoryview) -> Any:
        if is_torch_save(data):
            found = self._torch(data, BLOB_LEVEL)
        else:
            found = self._pickle(MemoryFile(data), BLOB_LEVEL)
        self._kept_views(found, BLOB_LEVEL)  # all of it becomes the net's attributes
        # What the loader refuses before restore() updates the net's state with it.
        made_dict = isinstance(found, Made) and found.entry.name == "builtins.dict"
        if type(found) is not dict and not made_dict and not isinstance(found, Opaque):
            self.refuse(NOT_DICT, f"{_made(found)} (in the {BLOB_LEVEL})")
        return found

    def _kept_views(self, found: Any, level: str) -> None:
        """Bytes read in place are views of the file, for skorch's reader to consume: a
        net's blob, a tensor stream. Kept anywhere else, they would outlive the load (the
        loader refuses that, as ``untrusted._reading`` finds the map still in use)."""
        seen, todo = set(), [found]
        while todo:
            obj = todo.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, memoryview):
                self.refuse(KEPT_VIEW, f"in what the load returns (in the {level})")
                return
            if isinstance(obj, Made):
                state = obj.state
                if id(obj) in self.restored and type(state) is dict:
                    state = {k: v for k, v in state.items() if k != BLOB}  # restore() pops it
                todo += [*obj.args, state, *obj.items]
            elif isinstance(obj, dict):
                todo += [*obj.keys(), *obj.values()]
            elif isinstance(obj, (list, tuple, set, frozenset)):
                todo += obj

    def stream(self, data: bytes | memoryview) -> Any:
        return self._torch(data, TENSORS)

    def _torch(self, data: bytes | memoryview, level: str) -> Any:
        """What ``torch.load`` would return, as the audit sees it (Opaque: it can't tell)."""
        if bytes(data[:4]) == ZIP_MAGIC:
            refused = refusals(data, level)
            if refused:  # torch.load would never read such an archive for the loader
                self.findings.refused.update(refused)
                return Opaque()
            pickled = io.BytesIO(data_pickle(data))  # its storages are in the rest of the zip
            sizes = storage_sizes(data)
            return self._pickle(pickled, level, torch_stream=True, room=len(data), records=sizes)
        file = MemoryFile(data)
        # magic number, protocol, sys_info, the object, storage keys; raw storages follow.
        if self._pickle(file, level) != TORCH_MAGIC:
            self.refuse(f"a stream in the {level}", "not a torch.save stream (no magic number)")
            return Opaque()
        found: list[Any] = []
        roots: dict[str, Storage] = {}
        for torch_stream in (False, False, True, False):
            found.append(self._pickle(file, level, torch_stream=torch_stream, roots=roots))
            if isinstance(found[-1], Opaque):
                return found[-1]  # a broken rule stops the level: the rest can't be found
        for name, why in unfilled(roots, found[3], level, file).items():
            self.refuse(name, why)
        return found[2]

    def _pickle(
        self,
        file: Any,
        level: str,
        *,
        torch_stream: bool = False,
        arrays_follow: bool = False,
        roots: dict[str, Storage] | None = None,
        room: int | None = None,
        records: dict[str, int] | None = None,
    ) -> Any:
        """``roots`` collects the storage each id the pickle reads files under its root key;
        ``room``: the bytes the level holds, if more than ``file``'s; ``records``: a zip's
        storage sizes by key."""
        unpickler = Symbolic(
            file,
            self,
            level,
            torch_stream=torch_stream,
            room=room,
            records=records,
            arrays_follow=arrays_follow,
        )
        try:
            return unpickler.load()
        except UntrustedPickleError as error:  # a rule broken: this level stops here
            self.findings.refused.update(error.refused)
            return Opaque()
        finally:
            if roots is not None:
                roots.update(unpickler.roots())


def restored_refusal(cls: type | None, state: Any, blob: Any, level: str) -> dict[str, str]:
    """What ``restore()`` refuses of a net of ``cls`` built with ``state``, read statically:
    every key its final attribute dict gets, from this state, skorch 0.11's ``_kwargs`` and
    the blob, and the installed class's own parameters (legacy fills in the missing ones).
    The blob's keys are those of the dict its pickle builds; what the audit cannot follow
    (a blob that is no dict, a refused one) it has refused already."""
    if type(state) is not dict:
        return {}
    outer = [key for key in state if key not in SKORCH_KEYS]
    if "_kwargs" in state:
        kwargs = dict_items(state["_kwargs"])
        if kwargs is None:
            return {MERGED: f"{KWARGS_NOT_DICT}, not {_made(state['_kwargs'])} (in the {level})"}
        outer += [key for key, _ in kwargs]
    outer += init_defaults(cls) if cls is not None else []
    found = dict_items(blob) if blob is not None else []
    from_blob = [key for key, _ in found or [] if key != PREFIXES]
    return merged_refusal(cls, [(BLOB_LEVEL, from_blob), (level, outer)])


def dict_items(obj: Any) -> list[tuple[Any, Any]] | None:
    """The items of a ``dict`` as the audit has it: a literal one, or one a call of
    ``builtins.dict`` made and SETITEMS filled (all of them: the loader's, a snapshot,
    holds no more). None where it is no ``dict`` or its keys can't be told."""
    if type(obj) is dict:
        return list(obj.items())
    if not isinstance(obj, Made) or obj.entry.name != "builtins.dict":
        return None
    items: list[tuple[Any, Any]] = list(zip(obj.items[::2], obj.items[1::2], strict=True))
    if not obj.args:
        return items
    (source,) = obj.args
    if type(source) is dict:
        return [*source.items(), *items]
    pairs = [pair for pair in source if type(pair) in (tuple, list) and len(pair) == 2]
    return None if len(pairs) != len(source) else [*map(tuple, pairs), *items]


def _made(found: Any) -> str:
    return f"a {found.entry.name}" if isinstance(found, Made) else f"a {type(found).__name__}"


def is_torch_save(blob: bytes | memoryview) -> bool:
    """Whether ``blob`` was written by ``torch.save`` (zip or old stream), not ``pickle``."""
    head = bytes(blob[:32])
    if head[:4] == ZIP_MAGIC:
        return True
    # The old stream starts with the pickled magic number: PROTO 2, then LONG1 of 10 bytes.
    return (
        head[:3] == b"\x80\x02\x8a"
        and head[3:4] == b"\x0a"
        and (int.from_bytes(head[4:14], "little") == TORCH_MAGIC)
    )


def audit(data: bytes | memoryview, policy: Policy, where: str) -> Findings:
    """Read ``data`` (a whole file) statically under ``policy``."""
    with unreadable():
        return Audit(policy, where).file(data)


def audit_blob(blob: bytes | memoryview, policy: Policy, where: str) -> Findings:
    with unreadable():
        checker = Audit(policy, where)
        if type(blob) in (bytes, memoryview):
            checker.blob(blob)
        else:  # skorch writes bytes: anything else was built by a call the audit cannot follow
            checker.refuse(NOT_BYTES, f"a {type(blob).__name__} (in the {OUTER})")
        return checker.findings


def refuse_untrusted(findings: Findings, where: str) -> None:
    if findings.refused:
        raise UntrustedPickleError(where, findings.refused)


@contextmanager
def unreadable() -> Iterator[None]:
    """Whatever bytes make a reader raise becomes one UnpicklingError that says so."""
    try:
        yield
    except (UntrustedPickleError, NotAPickledNet):
        raise
    except Exception as exc:  # UnpicklingError, EOFError, BadZipFile, RecursionError, ...
        raise pickle.UnpicklingError(
            f"not a readable pickle ({type(exc).__name__}: {exc})"
        ) from None  # the message names the cause; its traceback is the reader's, noise
