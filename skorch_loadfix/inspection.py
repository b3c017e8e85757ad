"""A static reading of a pickled skorch net: nothing the file names is imported or run.

Every global the file names is replaced by a stand-in that only records how it was
called, so the reading can follow the net's state into the nested blob and each
tensor stream without trusting any of it. ``load()`` audits with it before it
constructs anything, and ``python -m skorch_loadfix inspect`` reports from it. (A
file can still ask for a great deal of memory; bounding that is out of scope.)
"""

from __future__ import annotations

import _codecs
import io
import pickle
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .allowlist import Policy, python3_name
from .blob import BLOB_LEVEL, TENSOR_STREAM, TENSORS, ZIP_MAGIC, is_torch_save
from .errors import UntrustedPickleError
from .formats import BLOB
from .unpickling import Unpickler

OUTER = "outer pickle"
Global = tuple[str, str]  # (module, qualname), spelt as Python 3 does
Globals = dict[str, set[Global]]  # level -> every global named there


class _StandIn:
    """What every global in an inspected file becomes: records, never runs."""

    name: Global = ("", "")
    args: tuple[Any, ...] = ()  # NEWOBJ creates instances without calling __init__
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.state = args, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any) -> _StandIn:  # what a global returned, called in turn
        return _StandIn(self, *args)

    def __setitem__(self, key: Any, value: Any) -> None:  # OrderedDict and friends
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{'.'.join(self.name)}>"


class _Recorder(Unpickler):
    def __init__(self, file: io.BytesIO, seen: set[Global]) -> None:
        super().__init__(file)
        self.seen = seen

    def find_class(self, module: str, name: str) -> Any:
        found = python3_name(module, name)
        self.seen.add(found)
        if found == ("_codecs", "encode"):
            return _codecs.encode  # protocol 2 spells bytes so: a tensor stream may be in them
        return type(name, (_StandIn,), {"name": found})

    def persistent_load(self, pid: Any) -> _StandIn:  # a torch.save storage
        return _StandIn(pid)


def read_file(data: bytes) -> tuple[Any, Globals]:
    """The file's object with stand-ins for globals, and the globals at every level."""
    seen: Globals = {OUTER: set(), BLOB_LEVEL: set(), TENSORS: set()}
    with unreadable():
        outer = _Recorder(io.BytesIO(data), seen[OUTER]).load()
        _follow_streams(outer, seen)
        for net in _nets(outer):
            if isinstance(net.state[BLOB], bytes):
                _follow_streams(_read_blob(net.state[BLOB], seen[BLOB_LEVEL]), seen)
    return outer, seen


def blob_globals(blob: bytes) -> Globals:
    """The globals in a net's blob and in the tensor streams nested in it."""
    seen: Globals = {BLOB_LEVEL: set(), TENSORS: set()}
    with unreadable():
        _follow_streams(_read_blob(blob, seen[BLOB_LEVEL]), seen)
    return seen


def refused(seen: Globals, policy: Policy) -> dict[str, str]:
    """Each global ``policy`` refuses, with why and the levels where it appears."""
    reasons: dict[str, tuple[str, list[str]]] = {}
    for level, names in seen.items():
        for module, name in sorted(names):
            why = None if (module, name) == TENSOR_STREAM else policy.refusal(module, name)
            if why is not None:
                reasons.setdefault(f"{module}.{name}", (why, []))[1].append(level)
    return {name: f"{why} (in the {', '.join(levels)})" for name, (why, levels) in reasons.items()}


def refuse_untrusted(seen: Globals, policy: Policy, where: str) -> None:
    """Raise ``UntrustedPickleError`` naming every global ``policy`` refuses, if any."""
    refusals = refused(seen, policy)
    if refusals:
        raise UntrustedPickleError(where, refusals)


@contextmanager
def unreadable() -> Iterator[None]:
    """Whatever bytes make the reader raise becomes one UnpicklingError that says so."""
    try:
        yield
    except UntrustedPickleError:
        raise
    except Exception as exc:  # UnpicklingError, EOFError, BadZipFile, RecursionError, ...
        raise pickle.UnpicklingError(
            f"not a readable pickle ({type(exc).__name__}: {exc})"
        ) from exc


def blob_format(blob: bytes) -> str:
    if blob[:4] == ZIP_MAGIC:
        return "torch.save (zip)"
    return "torch.save (stream, torch < 1.6)" if is_torch_save(blob) else "pickle"


def _read_blob(blob: bytes, seen: set[Global]) -> Any:
    if blob[:4] == ZIP_MAGIC:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        # torch reads one data.pkl; reading every pickle in the archive misses none.
        names = [name for name in archive.namelist() if name.endswith(".pkl")]
        return [_Recorder(io.BytesIO(archive.read(name)), seen).load() for name in names]
    file = io.BytesIO(blob)
    if is_torch_save(blob):  # magic number, protocol, sys_info, the object, storage keys
        return [_Recorder(file, seen).load() for _ in range(5)]
    return _Recorder(file, seen).load()


def _follow_streams(obj: Any, seen: Globals) -> None:
    for stream in _tensor_streams(obj):
        _follow_streams(_read_blob(stream, seen[TENSORS]), seen)


def _walk(obj: Any, seen: set[int] | None = None) -> Iterator[Any]:
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, dict):
        children: Any = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = obj
    elif isinstance(obj, _StandIn):
        children = [*obj.args, obj.state]
    else:
        return
    for child in children:
        yield from _walk(child, seen)


def _nets(obj: Any) -> Iterator[_StandIn]:
    for found in _walk(obj):
        if isinstance(found, _StandIn) and isinstance(found.state, dict) and BLOB in found.state:
            yield found


def _tensor_streams(obj: Any) -> Iterator[bytes]:
    for found in _walk(obj):
        if isinstance(found, _StandIn) and found.name == TENSOR_STREAM:
            yield from (arg for arg in found.args if isinstance(arg, bytes))


@dataclass(frozen=True)
class Report:
    net_class: str | None
    blob_format: str | None
    torch_load_kwargs: Any
    device: Any
    globals: dict[str, list[str]]
    refused_under_weights_only: list[str] = field(default_factory=list)
    needs_module_subclass: list[str] = field(default_factory=list)
    refused_by_load: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"net: {self.net_class or 'no skorch net found'}",
            f"blob written by: {self.blob_format or '-'}",
            f"torch_load_kwargs stored in the file: {self.torch_load_kwargs!r}",
            f"device stored in the file: {self.device!r}",
        ]
        for level, names in self.globals.items():
            lines.append(f"globals in the {level}:")
            lines += [f"  {name}" for name in names] or ["  (none)"]
        lines.append(f"loads with weights_only=True: {self.verdict}")
        refusals = [f"  {name}: {why}" for name, why in self.refused_by_load.items()]
        lines.append(f"loads with skorch_loadfix.load(): {'no, it refuses' if refusals else 'yes'}")
        return "\n".join(lines + refusals)

    @property
    def verdict(self) -> str:
        if self.refused_under_weights_only:
            return "no, it refuses " + ", ".join(self.refused_under_weights_only)
        if self.needs_module_subclass:
            return (
                "yes, if these are torch.nn.Module, Optimizer or LRScheduler subclasses: "
                + ", ".join(self.needs_module_subclass)
            )
        return "yes"


def inspect_file(data: bytes) -> Report:
    """Report on the pickled bytes of a skorch net (or of anything holding one)."""
    outer, seen = read_file(data)
    net = next(_nets(outer), None)
    state = net.state if net is not None else {}
    blob = state.get(BLOB)
    nested = {level: seen[level] for level in (BLOB_LEVEL, TENSORS)}
    weights_only = refused(nested, Policy(imported_components=True))
    # This reading imports nothing from the file, so a net's own module classes are
    # judged by whether their module is imported here: if not, they are a condition.
    conditional = [name for name in weights_only if name.rpartition(".")[0] not in sys.modules]
    return Report(
        net_class=".".join(net.name) if net is not None else None,
        blob_format=blob_format(blob) if isinstance(blob, bytes) else None,
        torch_load_kwargs=state.get("torch_load_kwargs"),
        device=state.get("device"),
        globals={level: sorted(map(".".join, names)) for level, names in seen.items()},
        refused_under_weights_only=[name for name in weights_only if name not in conditional],
        needs_module_subclass=conditional,
        refused_by_load=refused(seen, Policy()),
    )
