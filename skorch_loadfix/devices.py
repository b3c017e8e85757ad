"""Nets saved on a device this machine lacks: where their tensors go when they are loaded.

skorch maps the tensors in a net's blob to the net's device, or to the CPU with a
``DeviceWarning`` when CUDA is missing. Tensors held anywhere else (an ``LRScheduler``'s
copy of the optimizer, a scoring callback's cached predictions, a custom attribute) are
pickled in the outer pickle as ``torch.storage._load_from_bytes`` calls, which torch
runs before skorch is asked, with no ``map_location``: a net trained on a GPU then fails
to load on a CPU (skorch issue #1096). The outer pickle may hold objects other than
nets, which cannot be told apart there, so only a storage torch cannot restore, because
its device is missing, is loaded elsewhere: a load that works today is left as it is.

The write side is skorch PR #1150, for every release: callbacks drop what they rebuild
at ``on_train_begin`` (a scheduler holding the optimizer) or ``on_epoch_begin`` (a
scoring callback's cache) when pickled, so no device tensor leaves the blob.

``load_onto(device)`` moves a pickled net, every level of it, to a device of the
caller's choosing, on a machine that has the net's own device too.
"""

from __future__ import annotations

import copy
import io
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import serialization

from .load_kwargs import onto as onto_device
from .load_kwargs import remaps_devices

Device = str | torch.device

# What each callback rebuilds, by the hook that rebuilds it: None or an empty cache.
# "module.qualname" -> {attribute: what it holds once pickled}.
REBUILT: Mapping[str, Mapping[str, Any]] = types.MappingProxyType(
    {
        # lr_scheduler_.optimizer is net.optimizer_: pickled twice, the second copy outside
        # the blob. on_train_begin builds a new scheduler on the net's optimizer (PR #1150).
        "skorch.callbacks.lr_scheduler.LRScheduler": {"lr_scheduler_": None},
        # The batches of y and of the predictions (on the net's device) of the epoch so far,
        # kept until on_epoch_begin: a Checkpoint(f_pickle=...) pickles them.
        "skorch.callbacks.scoring.EpochScoring": {"y_trues_": [], "y_preds_": []},
    }
)


def available(location: Device) -> bool:
    """Whether torch can put a storage on ``location`` here: its backend and its index."""
    device = torch.device(location)
    if device.type in ("cpu", "meta"):
        return True
    if device.type == "mps":
        return bool(torch.backends.mps.is_available())
    backend = getattr(torch, device.type, None)  # cuda, xpu, hpu, mtia, ...
    is_available = getattr(backend, "is_available", None)
    if is_available is None or not is_available():
        return False
    count = getattr(backend, "device_count", None)
    return device.index is None or count is None or device.index < count()


def usable(location: Device, where: str) -> torch.device:
    """``location``, or where ``remap`` would put it, with skorch's ``DeviceWarning``."""
    device = torch.device(location)
    if available(device):
        return device
    target = _fallback(device)
    _warn(
        f"{where}: requested to load data to {str(device)!r}, which this machine lacks; "
        f"loading on device {str(target)!r} instead"
    )
    return target


def remap(storage: Any, location: str) -> Any:
    """A ``map_location`` that changes only what torch cannot restore: a storage whose device
    is missing goes to another device of its kind (``cuda:1`` on a one-GPU machine), else to
    the CPU, with a warning; every other storage is restored as torch restores it."""
    # torch's own restore, as torch.load calls it (torch 2.0 to 2.14), is untyped.
    default_restore_location: Callable[[Any, str], Any] = serialization.default_restore_location
    try:
        return default_restore_location(storage, location)
    except RuntimeError:
        if available(location):
            raise
    target = str(_fallback(torch.device(location)))
    _warn(
        f"skorch-loadfix: a tensor saved on {location!r}, which this machine lacks, is "
        f"loaded on {target!r} instead (see skorch_loadfix.apply(remap_devices=...))"
    )
    return default_restore_location(storage, target)


def _fallback(device: torch.device) -> torch.device:
    """Another device of the same kind (the first GPU for ``cuda:1``), else the CPU."""
    kind = torch.device(device.type)
    return kind if available(kind) else torch.device("cpu")


def outer_map_location() -> Any:
    """The ``map_location`` of tensors outside any net: ``load_onto``'s device, or ``remap``."""
    onto = onto_device()
    return remap if onto is None else usable(onto, "skorch_loadfix.load_onto()")


def net_device(net_module: types.ModuleType, state: dict[str, Any]) -> torch.device:
    """Where a net's blob goes, skorch's way; ``state["device"]`` becomes ``load_onto``'s.

    skorch falls back to the CPU only for CUDA: a net saved on ``mps`` fails elsewhere.
    """
    onto = onto_device()
    if onto is not None:
        state["device"] = onto
    map_location = net_module.get_map_location(state["device"])
    return usable(map_location, "skorch-loadfix")


def load_from_bytes(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``torch.storage._load_from_bytes``, how the outer pickle loads each of its storages.

    Under ``load_onto`` every storage goes there. Otherwise torch's own load runs first,
    unchanged; only if it fails is the storage read again with ``remap``, which changes
    nothing but a missing device, and the first error stands if that fails too.
    """
    onto = onto_device()
    if onto is not None:
        return _load_from_bytes(args, usable(onto, "skorch_loadfix.load_onto()"))
    if not remaps_devices():
        return wrapped(*args, **kwargs)
    try:
        return wrapped(*args, **kwargs)
    except RuntimeError as error:
        try:
            return _load_from_bytes(args, remap)
        except Exception:
            raise error from None


def _load_from_bytes(args: tuple[Any, ...], map_location: Any) -> Any:
    (data,) = args  # how a pickled storage calls it
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)


def instance_state(obj: object) -> dict[str, Any]:
    """What pickle takes of an object without ``__getstate__``: what ``forgetting`` wraps
    (Python 3.10 has no ``object.__getstate__``)."""
    return dict(vars(obj))


def forgetting(attributes: Mapping[str, Any]) -> Any:
    """A ``__getstate__`` wrapper: the state with ``attributes`` as they are once rebuilt."""

    def getstate(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        state: dict[str, Any] = wrapped(*args, **kwargs)
        return {**state, **{k: copy.copy(v) for k, v in attributes.items() if k in state}}

    return getstate


def _warn(message: str) -> None:
    from skorch.exceptions import DeviceWarning

    warnings.warn(message, DeviceWarning, stacklevel=2)
