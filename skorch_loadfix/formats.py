"""Pickling a net as a given skorch generation would, whatever skorch is installed.

skorch <= 1.1 wrote a net's modules, criteria and optimizers with ``torch.save``;
skorch >= 1.2 with ``pickle``. Files of both kinds are in the wild, and the demo
and the tests need both on every installed version.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any, Literal

import torch

BLOB = "__cuda_dependent_attributes__"
Writer = Literal["torch.save", "pickle"]
WRITERS: tuple[Writer, ...] = ("torch.save", "pickle")


class _Pickler(pickle.Pickler):
    """Pickles ``net`` with ``state`` in place of what its ``__getstate__`` returns."""

    def __init__(self, file: io.BytesIO, net: Any, state: dict[str, Any]) -> None:
        super().__init__(file)
        self.net, self.state = net, state

    def reducer_override(self, obj: Any) -> Any:
        if obj is self.net:
            return copyreg.__newobj__, (type(obj),), self.state  # type: ignore[attr-defined]
        return NotImplemented


def dumps(net: Any, writer: Writer) -> bytes:
    """``pickle.dumps(net)`` with the blob written by ``torch.save`` or by ``pickle``."""
    return dumps_state(net, getstate(net, writer))


def getstate(net: Any, writer: Writer) -> dict[str, Any]:
    """``net.__getstate__()`` with the blob written by ``torch.save`` or by ``pickle``."""
    if writer not in WRITERS:
        raise ValueError(f"writer must be one of {WRITERS}, not {writer!r}")
    state: dict[str, Any] = net.__getstate__()
    cuda_attributes = {k: v for k, v in net.__dict__.items() if k not in state}
    blob = io.BytesIO()
    if writer == "torch.save":
        torch.save(cuda_attributes, blob)
    else:
        pickle.dump(cuda_attributes, blob)
    state[BLOB] = blob.getvalue()
    return state


def dumps_state(net: Any, state: dict[str, Any]) -> bytes:
    """``pickle.dumps(net)`` with ``state`` as what its ``__getstate__`` returned."""
    file = io.BytesIO()
    _Pickler(file, net, state).dump(net)
    return file.getvalue()
