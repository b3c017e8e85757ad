"""What a loaded net does when it is used: read from the audit, never run.

A net that loads cleanly still carries the file's choices into ``fit`` and ``predict``: the
paths its callbacks write and read (``Checkpoint``, ``TrainEndCheckpoint``,
``LoadInitState``, loggers), the callables it stores and will call (scorers,
``predict_nonlinearity``, an ``LRScheduler``'s policy, iterator and dataset classes), and
the ``torch_load_kwargs`` its later ``load_params`` would use. ``load()`` neutralizes only
the last (it replaces them with the caller's); the rest is the file's to choose, so it is
reported, read from the audit's symbols: nothing the file names is imported or run.
"""

from __future__ import annotations

import os
import reprlib
from dataclasses import dataclass
from typing import Any, Literal

from .verifier import Findings, Made, Opaque, Symbol, dict_items

Kind = Literal["writes", "reads", "calls"]
_PATH_PARTS = ("dirname", "fn_prefix")
# When skorch calls what a net's own attributes hold.
_NET_CALLS = {
    "predict_nonlinearity": "at predict and predict_proba",
    "train_split": "at fit",
    "dataset": "at fit and predict",
    "iterator_train": "at fit",
    "iterator_valid": "at fit and predict",
}
_CHECKPOINTS = {
    "skorch.callbacks.training.Checkpoint": "at fit, each time its monitor improves",
    "skorch.callbacks.training.TrainEndCheckpoint": "at the end of fit",
}
LOAD_INIT_STATE = "skorch.callbacks.training.LoadInitState"


@dataclass(frozen=True)
class Effect:
    """One thing the net does with what the file chose: ``kind`` ``where`` ``value`` ``when``."""

    kind: Kind
    where: str  # the attribute, e.g. "callback 'checkpoint' (...Checkpoint).f_history"
    value: str  # the path or callable, as the file spells it
    when: str

    def __str__(self) -> str:
        return f"{self.kind} {self.value}: {self.where}, {self.when}"


@dataclass(frozen=True)
class NetEffects:
    """What one net in the file does when used, and the ``torch_load_kwargs`` it carries."""

    net: str
    torch_load_kwargs: str
    weakens_later_loads: bool
    effects: tuple[Effect, ...]

    def __str__(self) -> str:
        weak = (
            " (weakens its later load_params, e.g. LoadInitState's, unless load() or strict "
            "replaces it)"
            if self.weakens_later_loads
            else ""
        )
        lines = [f"{self.net}:", f"  torch_load_kwargs: {self.torch_load_kwargs}{weak}"]
        return "\n".join(lines + [f"  {effect}" for effect in self.effects])


def post_load_effects_of(findings: Findings) -> list[NetEffects]:
    """The effects of each net the audit found, in the order the file builds them."""
    return [_net_effects(net) for net in findings.nets if type(net.state) is dict]


def _net_effects(net: Made) -> NetEffects:
    state: dict[str, Any] = net.state
    found: list[Effect] = []
    for name, when in _NET_CALLS.items():
        if name in state:
            found += _calls(state[name], name, when, instances=True)
    for name in ("module", "criterion", "optimizer"):
        if name in state:
            found += _calls(state[name], name, "at fit (initialize)", instances=False)
    for name, value in state.items():  # module__nonlin=..., iterator_train__collate_fn=...
        if type(name) is str and "__" in name and not name.startswith("_"):
            found += _calls(value, name, "at fit (initialize)", instances=False)
    for label, callback in _callbacks(state):
        found += _callback_effects(callback, f"callback {label}")
    kwargs = state.get("torch_load_kwargs")
    return NetEffects(net.entry.name, _shown(kwargs), _weakens(kwargs), tuple(found))


def _callbacks(state: dict[str, Any]) -> list[tuple[str, Made]]:
    """Each callback once: skorch's initialized ``callbacks_`` (name, callback) pairs first,
    then the ``callbacks`` parameter's (instances, or pairs)."""
    seen: set[int] = set()
    found = []
    for key in ("callbacks_", "callbacks"):
        items = state.get(key)
        for item in items if isinstance(items, (list, tuple)) else ():
            name, callback = (
                item if type(item) in (tuple, list) and len(item) == 2 else (None, item)
            )
            if isinstance(callback, Made) and id(callback) not in seen:
                seen.add(id(callback))
                label = repr(name) if type(name) is str else f"{key}[...]"
                found.append((f"{label} ({callback.entry.name})", callback))
    return found


def _callback_effects(callback: Made, where: str) -> list[Effect]:
    state = callback.state if type(callback.state) is dict else {}
    found: list[Effect] = []
    name = callback.entry.name
    if name in _CHECKPOINTS:
        found += _paths(state, "writes", where, _CHECKPOINTS[name])
        if state.get("load_best") is True:
            found += _paths(state, "reads", where, "at the end of fit (load_best)")
    if name == LOAD_INIT_STATE and isinstance(state.get("checkpoint"), Made):
        checkpoint = state["checkpoint"]
        inner = checkpoint.state if type(checkpoint.state) is dict else {}
        found += _paths(inner, "reads", f"{where}.checkpoint", "at the start of fit")
    for key, value in state.items():
        if name not in _CHECKPOINTS and value is not None and _directory(key):  # a logger's
            found.append(Effect("writes", f"{where}.{key}", _shown(value), "at fit"))
        found += _calls(value, f"{where}.{key}", "at fit", instances=False)
    return found


def _directory(key: Any) -> bool:
    return type(key) is str and (key in ("dirname", "log_dir") or key.endswith("_dir"))


def _paths(state: dict[str, Any], kind: Kind, where: str, when: str) -> list[Effect]:
    """A checkpoint's files: ``dirname`` joined with ``fn_prefix`` and each ``f_*`` set."""
    dirname, prefix = (state.get(part) for part in _PATH_PARTS)
    found = []
    for key, value in state.items():
        if type(key) is not str or not key.startswith("f_") or value is None:
            continue
        if type(value) is str and type(dirname) is str and type(prefix) is str:
            shown = repr(os.path.join(dirname, prefix + value))
        else:  # a file object, or parts that are no str: as they are
            shown = f"{_shown(value)} (dirname {_shown(dirname)}, fn_prefix {_shown(prefix)})"
        found.append(Effect(kind, f"{where}.{key}", shown, when))
    return found


def _calls(value: Any, where: str, when: str, *, instances: bool) -> list[Effect]:
    """Every callable ``value`` holds, through plain containers and a partial's arguments
    (each visited once). Named classes and functions, partials and scorers; ``instances``:
    any other instance too (``train_split=ValidSplit(...)`` is called)."""
    found, seen, todo = [], set(), [value]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if type(item) in (list, tuple, set, frozenset):
            todo += item
        elif type(item) is dict:
            todo += item.values()
        elif _called(item) or (instances and isinstance(item, (Made, Opaque))):
            found.append(Effect("calls", where, _shown(item), when))
            if isinstance(item, Made) and type(item.state) is tuple:  # a partial's arguments
                todo += item.state[1:3]
    return found


def _called(item: Any) -> bool:
    """A named class or function (not a dtype: ``torch.float32``), a partial, a scorer."""
    if isinstance(item, Symbol):
        name = item.entry.name
        return not (name.startswith("torch.") and name.count(".") == 1)
    return isinstance(item, Made) and (
        item.entry.name == "functools.partial" or item.entry.name.startswith("sklearn.metrics")
    )


def _weakens(kwargs: Any) -> bool:
    """Whether a later ``torch.load`` with ``kwargs`` would be less restricted than
    skorch's default: ``weights_only`` off, or anything the audit can't read as a dict."""
    if kwargs is None:
        return False
    items = dict_items(kwargs)
    if items is None:
        return True
    weights_only = dict(items).get("weights_only", True)
    return weights_only is not True


def _shown(value: Any) -> str:
    if isinstance(value, Symbol):
        return value.entry.name
    if isinstance(value, Opaque):
        return "(something the audit refuses)"
    if isinstance(value, Made):
        if value.entry.name == "functools.partial" and type(value.state) is tuple:
            return f"functools.partial({_shown(value.state[0])}, ...)"
        return f"a {value.entry.name}"
    return _BOUNDED.repr(value)


class _Bounded(reprlib.Repr):
    """A repr whose cost the file cannot choose: three levels, a few items of each, no
    int printed whole (a memo-shared list nested 40 deep is 2**40 items in full)."""

    def __init__(self) -> None:
        super().__init__()  # Python 3.11's takes no limits: set below
        self.maxlevel, self.maxlong, self.maxstring, self.maxother = 3, 40, 120, 120
        self.maxtuple = self.maxlist = self.maxdict = self.maxset = self.maxfrozenset = 6

    def repr_int(self, x: int, level: int) -> str:
        return (
            super().repr_int(x, level)
            if x.bit_length() <= 128
            else f"<an int of {x.bit_length()} bits>"
        )


_BOUNDED = _Bounded()
