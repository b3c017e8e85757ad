"""A static report on a pickled skorch net: nothing the file names is imported or run.

Every global the file names is replaced by a stand-in that only records how it was
called, so the report can follow the net's state into the nested blob and each
tensor stream without trusting any of it. (A file can still ask for a great deal of
memory; bounding that is out of scope.)
"""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .blob import ZIP_MAGIC, is_torch_save, python3_name, weights_only_global
from .formats import BLOB

OUTER, BLOB_LEVEL, TENSORS = "outer pickle", "cuda-attributes blob", "tensor streams"
_TENSOR_STREAM = "torch.storage._load_from_bytes"


class _StandIn:
    """What every global in an inspected file becomes: records, never runs."""

    global_name = ""
    args: tuple[Any, ...] = ()  # NEWOBJ creates instances without calling __init__
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.state = args, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # OrderedDict and friends
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{self.global_name}>"


class _Recorder(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, seen: set[str]) -> None:
        super().__init__(file)
        self.seen = seen

    def find_class(self, module: str, name: str) -> type[_StandIn]:
        global_name = ".".join(python3_name(module, name))
        self.seen.add(global_name)
        return type(name, (_StandIn,), {"global_name": global_name})

    def persistent_load(self, pid: Any) -> _StandIn:  # a torch.save storage
        return _StandIn(pid)


@dataclass(frozen=True)
class Report:
    net_class: str | None
    blob_format: str | None
    torch_load_kwargs: Any
    device: Any
    globals: dict[str, list[str]]
    refused_under_weights_only: list[str] = field(default_factory=list)
    needs_module_subclass: list[str] = field(default_factory=list)

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
        return "\n".join(lines)

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
    seen: dict[str, set[str]] = {OUTER: set(), BLOB_LEVEL: set(), TENSORS: set()}
    outer = _Recorder(io.BytesIO(data), seen[OUTER]).load()
    net = next(_nets(outer), None)
    blob_format = None
    if net is not None:
        blob = net.state[BLOB]
        blob_format, attributes = _read_blob(blob, seen[BLOB_LEVEL])
        for stream in _tensor_streams(attributes):
            _read_blob(stream, seen[TENSORS])
    state = net.state if net is not None else {}
    refused, conditional = _weights_only_verdict(seen)
    return Report(
        net_class=net.global_name if net is not None else None,
        blob_format=blob_format,
        torch_load_kwargs=state.get("torch_load_kwargs"),
        device=state.get("device"),
        globals={level: sorted(names) for level, names in seen.items()},
        refused_under_weights_only=refused,
        needs_module_subclass=conditional,
    )


def _read_blob(blob: bytes, seen: set[str]) -> tuple[str, Any]:
    if blob[:4] == ZIP_MAGIC:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        data_pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        return "torch.save (zip)", _Recorder(io.BytesIO(archive.read(data_pkl)), seen).load()
    file = io.BytesIO(blob)
    if is_torch_save(blob):  # magic number, protocol, sys_info, then the object
        for _ in range(3):
            _Recorder(file, seen).load()
        return "torch.save (stream, torch < 1.6)", _Recorder(file, seen).load()
    return "pickle", _Recorder(file, seen).load()


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
        if isinstance(found, _StandIn) and found.global_name == _TENSOR_STREAM:
            yield from (arg for arg in found.args if isinstance(arg, bytes))


def _weights_only_verdict(seen: dict[str, set[str]]) -> tuple[list[str], list[str]]:
    """Refused globals, and those allowed only as Module/Optimizer/LRScheduler subclasses.

    The patched reader allows such a subclass from a module that is imported by the
    time the blob is read (the outer pickle imports the net's own modules). This
    report imports nothing, so a global from a module not imported here is named as
    a condition instead of judged.
    """
    refused: list[str] = []
    conditional: list[str] = []
    for name in sorted(seen[BLOB_LEVEL] | seen[TENSORS]):
        module, _, attribute = name.rpartition(".")
        if name == _TENSOR_STREAM or weights_only_global(module, attribute) is not None:
            continue
        (refused if module in sys.modules else conditional).append(name)
    return refused, conditional
