"""The keyword arguments each ``torch.load`` gets, and the checks they pass first.

Precedence, first that is set wins: the caller's ``torch_load_kwargs()`` block, the
net's own ``torch_load_kwargs``, the default given to ``apply()``, the installed
skorch's default. ``weights_only`` is always filled in, so torch never has to guess it.

Where a pickled net's tensors go is not a kwarg: skorch passes its own ``map_location``,
the net's device. The caller names another with ``load_onto()``, which wins over the
device stored in the file as the caller's kwargs win over the file's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

_caller: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "skorch_loadfix.caller_kwargs", default=None
)
_onto: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "skorch_loadfix.load_onto", default=None
)
_process_default: dict[str, Any] | None = None
_strict = False
_remap_devices = True


def checked(kwargs: object, where: str, *, in_memory: bool = False) -> dict[str, Any]:
    """Return ``kwargs`` as a dict, or fail naming ``where`` and the fix.

    Only what would crash is refused. Anything else skorch itself accepts goes to
    ``torch.load`` verbatim (keys this package doesn't know, a ``weights_only`` that
    is not a bool), so the patch never changes what skorch does with it; restrictions
    follow ``bool(weights_only)``, as torch's own do. ``in_memory`` marks loads of bytes
    already in memory (a pickled net), which cannot be memory-mapped and must use the
    reader's own unpickler.
    """
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"{where}: torch_load_kwargs must be a mapping such as "
            f"{{'weights_only': True}}, not {type(kwargs).__name__}"
        )
    kwargs = dict(kwargs)
    if "map_location" in kwargs:
        raise ValueError(
            f"{where}: torch_load_kwargs must not contain 'map_location'; skorch maps "
            "tensors to the net's device, so set device=... on the net instead, or "
            "unpickle it inside skorch_loadfix.load_onto(device)"
        )
    if in_memory and kwargs.get("mmap"):
        raise ValueError(
            f"{where}: mmap=True cannot apply to a pickled net, whose tensors are "
            "bytes already in memory; load it inside "
            "skorch_loadfix.torch_load_kwargs(weights_only=...) without mmap"
        )
    if in_memory and "pickle_module" in kwargs:
        raise ValueError(
            f"{where}: pickle_module cannot apply to a pickled net: skorch-loadfix "
            "picks the unpickler that weights_only asks for"
        )
    return kwargs


def effective(
    net_kwargs: object,
    where: str,
    fallback: Callable[[], Mapping[str, Any]],
    *,
    in_memory: bool = False,
    skorch_passes_own: bool = False,
) -> dict[str, Any]:
    """The kwargs for one ``torch.load`` made on behalf of a net.

    ``fallback`` returns the installed skorch's default. ``skorch_passes_own``: the
    installed skorch hands the net's own kwargs to this very ``torch.load``, so when
    they decide they go as skorch would pass them, without ``weights_only`` filled in
    (torch then picks its own default, as it would unpatched).
    """
    for source in (_caller.get(), net_kwargs, _process_default):
        if source is not None:
            kwargs = checked(source, where, in_memory=in_memory)
            if not (skorch_passes_own and source is net_kwargs):
                kwargs.setdefault("weights_only", fallback()["weights_only"])
            return kwargs
    return dict(fallback())


def set_process_default(
    kwargs: Mapping[str, Any] | None, *, strict: bool = False, remap_devices: bool = True
) -> None:
    """``strict``: a pickled net's own ``torch_load_kwargs`` no longer count (see ``apply``)."""
    global _process_default, _strict, _remap_devices
    if not isinstance(remap_devices, bool):
        raise TypeError(
            f"skorch_loadfix.apply(): remap_devices must be True or False, not {remap_devices!r}"
        )
    _process_default = None if kwargs is None else checked(kwargs, "skorch_loadfix.apply()")
    _strict, _remap_devices = strict, remap_devices


def process_default() -> dict[str, Any] | None:
    """A copy of the default ``apply()`` set, for whoever must put it back later."""
    return None if _process_default is None else dict(_process_default)


def caller_kwargs() -> dict[str, Any] | None:
    """What the caller decided for the loads made now: its block, else ``apply()``'s default."""
    caller = _caller.get()
    return dict(caller) if caller is not None else process_default()


def is_strict() -> bool:
    return _strict


def remaps_devices() -> bool:
    """``apply(remap_devices=...)``: see ``devices.load_from_bytes``."""
    return _remap_devices


def onto() -> str | None:
    """The device ``load_onto()`` names in this context, if any."""
    return _onto.get()


@contextmanager
def load_onto(device: Any) -> Iterator[None]:
    """Unpickle nets inside the block onto ``device``, whatever device they were saved on.

    Every level: the blob, its tensor streams, and the tensors outside it (callbacks,
    custom attributes), with ``net.device`` set to ``device``; under the patch, in
    ``load()`` and in ``upgrade --device``. A device this machine lacks falls back to
    the CPU with skorch's ``DeviceWarning``, as skorch's own does. A context variable, as
    ``torch_load_kwargs()`` is. ``net.load_params`` keeps mapping to ``net.device``.

    >>> with load_onto("cpu"):  # doctest: +SKIP
    ...     net = pickle.load(f)  # trained on a GPU, served on a CPU with a GPU
    """
    token = _onto.set(checked_device(device, "skorch_loadfix.load_onto()"))
    try:
        yield
    finally:
        _onto.reset(token)


def checked_device(device: object, where: str) -> str:
    """``device`` as ``net.device`` will hold it, or fail naming ``where`` and the fix."""
    import torch

    try:
        parsed = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{where}: {device!r} is not a device ({exc}); pass one such as 'cpu', "
            "'cuda', 'cuda:1', 'mps' or a torch.device"
        ) from None
    return device if isinstance(device, str) else str(parsed)


@contextmanager
def torch_load_kwargs(**kwargs: Any) -> Iterator[None]:
    """Decide the kwargs of every skorch ``torch.load`` inside the block.

    A context variable, not a global, so threads and asyncio tasks that load nets
    side by side each keep their own choice.

    >>> with torch_load_kwargs(weights_only=False):  # doctest: +SKIP
    ...     net = pickle.load(f)
    """
    token = _caller.set(checked(kwargs, "skorch_loadfix.torch_load_kwargs()"))
    try:
        yield
    finally:
        _caller.reset(token)
